"""A run is guarded at its edges: Ctrl-C/SIGTERM end it with one line and lose nothing, one process writes
one worker's shards, a corrupt line is named by file and line, and a failure that repeats is one line."""

import asyncio
import fcntl
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import BIN, cli, make_cfg
from llm_world import Gate, World
from mock_openai import MockServer
from toolturn.core.errors import ToolturnError
from toolturn.core.files import exclusive_lock
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.dialogue import Outcome
from toolturn.generate.run import GC_YOUNG_THRESHOLD, _produce, generate
from toolturn.generate.shards import ShardWriter
from toolturn.generate.stats import compute_stats
from tqdm import tqdm


def command(out_dir, n, *extra):
    return [str(BIN / "toolturn-generate"), "domain=retail", f"num_dialogues={n}", "concurrency=8", "seed=5",
            f"out_dir={out_dir}", "progress=false", "logger=none", *extra]


def llm_command(url, out_dir, n, *extra):
    """LLM roles against a scripted server, which a gate in front of it can stop at a known point."""
    return command(out_dir, n, "roles=llm", "llm=external", f"llm.endpoints.default.base_url={url}",
                   "llm.endpoints.default.model=mock", "policy=report", "concurrency=4", *extra)


def committed(run_dir, worker=None) -> int:
    """Records whose line is finished, in the run's part files (of one worker, or all)."""
    pattern = f"part-{worker:04d}-*.jsonl" if worker is not None else "part-*.jsonl"
    return sum(p.read_bytes().count(b"\n") for p in (run_dir / "shards").glob(pattern))


def wait_until(reached, proc, what, timeout=300):
    """Poll what the test can observe (files, the gate's counters) until `reached()`; the process must still
    run meanwhile. The timeout only guards against a hang: nothing here assumes how fast the machine is."""
    deadline = time.monotonic() + timeout
    while not reached():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        time.sleep(0.01)


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
    run, n = tmp_path / "run", 40
    run.mkdir()
    setup = RunDir(run).setup_lock()  # the first worker 0 waits for it, holding its writer lock: it cannot finish
    first = subprocess.Popen(command(run, n, "workers=2", "worker_index=0"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = run / ".worker-0000.lock"
        wait_until(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first, "its writer lock")
        second = cli(*command(run, n, "workers=2", "worker_index=0"))
        assert second.returncode == 2
        assert_one_line(second.stderr, f"error: worker 0 of {run} is in use by another process (pid {first.pid})")
    finally:
        setup.release()
    other = cli(*command(run, n, "workers=2", "worker_index=1"))
    assert other.returncode == 0, other.stderr
    assert committed(run, worker=1) == n // 2
    assert first.wait(timeout=300) == 0
    records = RunDir(run).records()
    assert len(records) == n and len({r["id"] for r in records}) == n
    assert audit_run(RunDir(run)).ok


def test_a_lock_file_replaced_while_it_is_being_locked_is_locked_again(tmp_path, monkeypatch):
    """Between our open and our flock another process replaces the file: the lock we got guards nothing, so it is
    taken again on the file the path names now (verified after locking)."""
    path, real, ops = tmp_path / ".worker-0000.lock", fcntl.flock, []

    def flock(f, op):
        if not ops:
            path.unlink()
            path.write_text("")
        ops.append(op)
        return real(f, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with exclusive_lock(path, "worker 0"):
        assert len(ops) == 2 and path.read_text().strip() == str(os.getpid())
        with pytest.raises(ToolturnError, match=f"worker 0 is in use by another process \\(pid {os.getpid()}\\)"):
            with exclusive_lock(path, "worker 0"):
                pass


def test_a_removed_lock_file_lets_no_second_writer_in(tmp_path):
    """Deleting a worker's lock file while it writes does not defeat the lock: the writer also holds a lock on the
    worker's shard log itself, which a second process for that worker needs before it reads or repairs anything."""
    out = tmp_path / "run"
    assert cli(*command(out, 4)).returncode == 0
    running = ShardWriter(RunDir(out), 0, 100)  # a worker 0 in the middle of writing
    try:
        (out / ".worker-0000.lock").unlink()
        second = cli(*command(out, 4))
        assert second.returncode == 2
        assert_one_line(second.stderr, f"error: worker 0 of {out} is being written by another process")
    finally:
        running.close()
    assert cli(*command(out, 4)).returncode == 0  # once it ends, the worker resumes
    assert assert_consistent(out) == 4 and audit_run(RunDir(out)).ok


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
    run, n = tmp_path / "run", 30
    gate = Gate(World(), 6)  # holds every request once 6 dialogues ended: the run cannot end before the signal
    with MockServer(gate) as server:
        proc = subprocess.Popen(llm_command(server.base_url, run, n), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            wait_until(lambda: gate.held > 0, proc, "the gate")
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=120)
        finally:
            gate.release()
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert "Traceback" not in out
    assert_one_line(err, "interrupted: ")
    saved = assert_consistent(run)
    assert saved < n
    assert f"{saved} dialogues saved in {run}; re-run the same command to resume" in err
    assert json.loads((run / "sessions.jsonl").read_text().splitlines()[-1])["produced"] == saved

    with MockServer(World()) as server:
        done = subprocess.run(llm_command(server.base_url, run, n), capture_output=True, text=True, timeout=300)
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


class RejectingFactory:
    """The endpoint rejects every request of a dialogue (a 400, as for a bad max_tokens), except for the
    indices in `kept`, which are kept."""

    def __init__(self, kept=()):
        self.kept = set(kept)

    async def make(self, i):
        if i in self.kept:
            return Outcome(i, {"id": f"r{i}", "messages": [], "tools": [], "meta": {"index": i}})
        return Outcome(i, None, "llm_http_400", "HTTP 400: max_tokens too large", provisional=True)


def test_an_endpoint_that_rejects_every_request_burns_no_dialogue_index(tmp_path):
    writer = ShardWriter(RunDir(tmp_path), 0, 100)
    with pytest.raises(ToolturnError, match="200 dialogues in a row were dropped.*llm_http_400"):
        asyncio.run(_produce(RejectingFactory(), writer, iter(range(10 ** 6)), 5, 8, tqdm(disable=True), 200))
    writer.close()
    assert list(RunDir(tmp_path).log_rows()) == []
    resumed = ShardWriter(RunDir(tmp_path), 0, 100)
    assert resumed.done == set()  # the resume starts again at index 0
    resumed.close()


def test_a_rejected_dialogue_followed_by_a_kept_one_is_logged_as_its_drop(tmp_path):
    writer = ShardWriter(RunDir(tmp_path), 0, 100)
    asyncio.run(_produce(RejectingFactory(kept={0, 3, 4}), writer, iter(range(10 ** 6)), 3, 2, tqdm(disable=True),
                         200))
    writer.close()
    assert [(r["index"], r["drop_reason"]) for r in RunDir(tmp_path).log_rows()] == [
        (0, None), (1, "llm_http_400"), (2, "llm_http_400"), (3, None), (4, None)]


def test_dialogues_run_with_the_collector_tuned_and_it_is_restored_after(tmp_path):
    seen = []

    class Factory(RejectingFactory):
        async def make(self, i):
            seen.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))
            return await super().make(i)

    before = gc.get_threshold()
    writer = ShardWriter(RunDir(tmp_path), 0, 100)
    asyncio.run(_produce(Factory(kept={0, 1}), writer, iter(range(10 ** 6)), 2, 2, tqdm(disable=True), 200))
    writer.close()
    assert set(seen) == {(GC_YOUNG_THRESHOLD, True)}
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)


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

