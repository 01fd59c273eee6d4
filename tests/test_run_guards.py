"""A run is guarded at its edges: Ctrl-C/SIGTERM end it with one line and lose nothing, one process writes
one worker's shards, a corrupt line is named by file and line, and a failure that repeats is one line."""

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import time

import pytest
from conftest import BIN, cli, make_cfg
from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import _produce, generate
from toolturn.generate.shards import ShardWriter
from toolturn.generate.stats import compute_stats
from tqdm import tqdm


def command(out_dir, n, *extra):
    return [str(BIN / "toolturn-generate"), "domain=retail", f"num_dialogues={n}", "concurrency=8", "seed=5",
            f"out_dir={out_dir}", "progress=false", "logger=none", *extra]


def committed(run_dir, worker=None) -> int:
    """Records whose line is finished, in the run's part files (of one worker, or all)."""
    pattern = f"part-{worker:04d}-*.jsonl" if worker is not None else "part-*.jsonl"
    return sum(p.read_bytes().count(b"\n") for p in (run_dir / "shards").glob(pattern))


def wait_for_records(proc, run_dir, k, worker=None, timeout=120):
    """Poll the shard files until they hold k records (the process must still be running then)."""
    deadline = time.monotonic() + timeout
    while committed(run_dir, worker) < k:
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it had {k} records"
        assert time.monotonic() < deadline, f"no {k} records within {timeout} s"
        time.sleep(0.005)


def assert_consistent(run_dir):
    """Shard files end with whole lines, and the logs name exactly the indices the parts hold."""
    run = RunDir(run_dir)
    for path in run.part_files() + run.log_files():
        assert path.read_bytes().endswith(b"\n"), path
    kept = {r["meta"]["index"] for r in run.iter_records()}
    assert kept == {row["index"] for row in run.log_rows() if row["drop_reason"] is None}
    return len(kept)


def assert_one_line(text, start):
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1 and text.startswith(start), text


# --- corrupt lines -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "run"
    generate(make_cfg("domain=retail", "num_dialogues=8", f"out_dir={out}"))
    return out


def copy_of(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    return run, next((run / "shards").glob("part-*.jsonl")), run / "shards" / "log-0000.jsonl"


@pytest.mark.parametrize("which, bad", [("part", '{"id": "x", "messa'), ("part", "[1, 2]"), ("part", '{"id": "x"}'),
                                        ("part", "\udcff"), ("log", "{not json"), ("log", '{"index": 3}')])
def test_a_corrupt_middle_line_is_named_by_every_reader(small_run, tmp_path, which, bad):
    run, part, log = copy_of(small_run, tmp_path)
    path = part if which == "part" else log
    lines = path.read_text().splitlines()
    lines[2] = bad
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    readers = [("toolturn-generate", "domain=retail", "num_dialogues=8", f"out_dir={run}", "progress=false"),
               ("toolturn-stats", str(run))] + ([("toolturn-audit", str(run))] if which == "part" else [])
    for args in readers:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_one_line(proc.stderr, f"error: {path} line 3: ")


def test_an_unfinished_last_line_is_skipped_by_readers_and_repaired_by_the_writer(small_run, tmp_path):
    run, part, _ = copy_of(small_run, tmp_path)
    part.write_text(part.read_text() + '{"id": "torn", "mes')
    with open(run / "sessions.jsonl", "a") as f:
        f.write('{"worker": 0, "sta')
    assert audit_run(RunDir(run)).records == 8
    assert compute_stats(RunDir(run))["dialogues"] == 8
    generate(make_cfg("domain=retail", "num_dialogues=8", f"out_dir={run}"))
    assert part.read_text().endswith("}\n") and assert_consistent(run) == 8
    assert len(RunDir(run).session_rows()) == 2  # the torn session line was cut before the new one

@pytest.mark.parametrize("name", ["domain.json", "tools.json", "db.sqlite"])
def test_audit_of_a_run_missing_its_domain_files_is_one_line(small_run, tmp_path, name):
    run, _, _ = copy_of(small_run, tmp_path)
    (run / "domains" / "retail" / name).unlink()
    proc = cli("toolturn-audit", str(run))
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "error: cannot load domain 'retail' of ")


# --- one writer per worker -----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_writer_of_one_worker_is_refused_other_workers_run(tmp_path):
    run, n = tmp_path / "run", 120
    first = subprocess.Popen(command(run, n, "workers=2", "worker_index=0"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_records(first, run, 1, worker=0)
        first.send_signal(signal.SIGSTOP)  # holds its lock, and cannot finish while we look
        second = cli(*command(run, n, "workers=2", "worker_index=0"))
        assert second.returncode == 2
        assert_one_line(second.stderr, f"error: worker 0 of {run} is in use by another process (pid {first.pid})")
        other = cli(*command(run, n, "workers=2", "worker_index=1"))
        assert other.returncode == 0, other.stderr
        assert committed(run, worker=1) == n // 2
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    records = RunDir(run).records()
    assert len(records) == n and len({r["id"] for r in records}) == n
    assert audit_run(RunDir(run)).ok


@pytest.mark.parametrize("edit, needle", [
    (lambda lines: lines + [lines[2]], "duplicate record id"),
    (lambda lines: lines + [lines[2].replace('"id": "', '"id": "x', 1)], "dialogue index 2 also has record"),
])
def test_audit_fails_on_duplicates(small_run, tmp_path, edit, needle):
    run, part, _ = copy_of(small_run, tmp_path)
    part.write_text("\n".join(edit(part.read_text().splitlines())) + "\n")
    audit = cli("toolturn-audit", str(run))
    assert audit.returncode == 1 and needle in audit.stdout and "1 mismatches" in audit.stdout, audit.stdout


# --- Ctrl-C and SIGTERM --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_is_one_line_and_loses_nothing(tmp_path, signum):
    run, n = tmp_path / "run", 150
    proc = subprocess.Popen(command(run, n), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_records(proc, run, 20)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert "Traceback" not in out
    assert_one_line(err, "interrupted: ")
    saved = assert_consistent(run)
    assert 20 <= saved < n
    assert f"{saved} dialogues saved in {run}; re-run the same command to resume" in err
    assert json.loads((run / "sessions.jsonl").read_text().splitlines()[-1])["produced"] == saved

    done = subprocess.run(command(run, n), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert assert_consistent(run) == n
    assert audit_run(RunDir(run)).ok


# --- a failure that repeats ----------------------------------------------------------------------------

class FailingFactory:
    """Every dialogue raises at the same line (odd indices at a second one when `two_kinds`)."""

    def __init__(self, two_kinds=False):
        self.two_kinds = two_kinds

    async def make(self, i):
        if self.two_kinds and i % 2:
            raise ValueError(f"bad value in dialogue {i}")
        raise KeyError(f"frame {i}")


def produce_failing(tmp_path, factory):
    writer = ShardWriter(RunDir(tmp_path), 0, 100)
    with pytest.raises(ToolturnError, match="200 dialogues in a row were dropped"):
        asyncio.run(_produce(factory, writer, iter(range(10 ** 6)), 5, 8, tqdm(disable=True), 200))
    writer.close()
    reasons = [row["drop_reason"] for row in RunDir(tmp_path).log_rows()]
    assert len(reasons) == 200 and set(reasons) <= {"error:KeyError", "error:ValueError"}


def messages(caplog, level=None):
    return [r for r in caplog.records if r.name == "toolturn.generate" and (level is None or r.levelno == level)]


def test_a_repeated_failure_is_one_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="toolturn.generate")
    produce_failing(tmp_path, FailingFactory())
    [line] = messages(caplog)
    assert line.getMessage().startswith("200 dialogue(s) dropped by KeyError at test_run_guards.py:")
    assert "first: dialogue 0" in line.getMessage() and line.exc_info is None


def test_a_repeated_failure_in_verbose_mode_shows_one_traceback(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="toolturn.generate")
    produce_failing(tmp_path, FailingFactory(two_kinds=True))
    tracebacks = [r for r in messages(caplog) if r.exc_info]
    assert [type(r.exc_info[1]) for r in tracebacks] == [KeyError, ValueError]
    counts = sorted(r.getMessage().split(" (first")[0] for r in messages(caplog, logging.WARNING))
    assert [c.split(" at ")[0] for c in counts] == ["100 dialogue(s) dropped by KeyError",
                                                    "100 dialogue(s) dropped by ValueError"]

