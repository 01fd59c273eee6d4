"""Runs survive: SIGKILL at several points then re-running finishes with exactly num_dialogues records; a torn
record is generated again; workers starting together set the domain up once; a resume agrees on every knob
that defines the run."""

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, cli, make_cfg
from llm_world import Gate, World
from mock_openai import MockServer
from toolturn.core.errors import ToolturnError
from toolturn.core.files import repair_tail
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.core.checks import plain_config
from toolturn.generate.config import IDENTITY_KEYS, SAFE_KEYS, identity_values
from toolturn.generate.run import generate

N = 30


def command(url, out_dir):
    """LLM roles against a scripted server: a gate in front of it can stop a run at a known point."""
    return [str(BIN / "toolturn-generate"), "domain=retail", "roles=llm", "llm=external",
            f"llm.endpoints.default.base_url={url}", "llm.endpoints.default.model=mock", "policy=report",
            f"num_dialogues={N}", "concurrency=4", "seed=5", f"out_dir={out_dir}", "progress=false", "logger=none"]


def check_run(run_dir, n):
    lines = [line for p in sorted((run_dir / "shards").glob("part-*.jsonl")) for line in p.read_text().split("\n")]
    assert lines[-1] == ""  # no torn last line
    records = [json.loads(line) for line in lines if line]
    assert len(records) == n
    assert len({r["id"] for r in records}) == n
    return [r["id"] for r in sorted(records, key=lambda r: r["meta"]["index"])]


def committed(run_dir) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (run_dir / "shards").glob("part-*.jsonl"))


def wait_until(reached, proc, what, timeout=900):
    """Poll what the test can observe (files, the gate's counters) until `reached()`; the process must still
    run meanwhile. The timeout only guards against a hang: nothing here assumes how fast the machine is."""
    deadline = time.monotonic() + timeout
    while not reached():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        time.sleep(0.01)


def holds_writer_lock(run_dir, proc) -> bool:
    lock = run_dir / ".worker-0000.lock"
    return lock.exists() and lock.read_text().strip() == str(proc.pid)


def kill_when(run_dir, url, reached, what) -> None:
    proc = subprocess.Popen(command(url, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: reached(proc), proc, what)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a hang guard: its seven runs took over 10 min at nice 19 beside a CPU-bound job
def test_sigkill_at_several_points_then_resume(tmp_path):
    with MockServer(World()) as server:
        subprocess.run(command(server.base_url, tmp_path / "baseline"), check=True, capture_output=True, timeout=1200)
    expected = check_run(tmp_path / "baseline", N)

    run = tmp_path / "killed"
    run.mkdir()
    # while it waits for the domain set-up that another process holds: its writer lock taken, nothing else done
    with RunDir(run).setup_lock(), MockServer(World()) as server:
        kill_when(run, server.base_url, lambda proc: holds_writer_lock(run, proc), "the writer lock")
    saved = []
    # then three times behind a gate that holds every request once `j` more dialogues have ended: the run cannot
    # finish before the kill (at most j + 3 end per session, 24 < N in all), whatever the machine's speed
    for j in (2, 5, 8):
        gate = Gate(World(), j)
        with MockServer(gate) as server:
            try:
                kill_when(run, server.base_url, lambda proc: gate.held > 0, f"the gate after {j} dialogues")
            finally:
                gate.release()
        saved.append(committed(run))
    assert saved == sorted(saved) and saved[-1] < N, saved
    with MockServer(World()) as server:
        done = subprocess.run(command(server.base_url, run), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert check_run(run, N) == expected  # same records as the uninterrupted run, nothing lost or doubled
    assert audit_run(RunDir(run)).ok
    assert len((run / "sessions.jsonl").read_text().splitlines()) >= 1


def test_torn_lines_are_repaired_on_resume(tmp_path):
    out = tmp_path / "run"
    cfg = lambda n: make_cfg("domain=retail", f"num_dialogues={n}", f"out_dir={out}")  # noqa: E731
    generate(cfg(10))
    part = next((out / "shards").glob("part-*.jsonl"))
    log = out / "shards" / "log-0000.jsonl"
    good = part.read_text().splitlines()
    # simulate a kill in the middle of writing records 9 and 10: drop them, leave a torn line
    part.write_text("\n".join(good[:8]) + "\n" + good[8][: len(good[8]) // 2])
    log_lines = log.read_text().splitlines()
    log.write_text("\n".join(log_lines[:8]) + "\n" + log_lines[8][:10])
    generate(cfg(10))
    assert [json.loads(x)["id"] for x in part.read_text().splitlines()] == [json.loads(x)["id"] for x in good]
    assert len(RunDir(out).records()) == 10


def test_repair_tail_cuts_only_the_torn_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"b": 2}\n{"c": ')
    assert repair_tail(p) == len('{"c": ')
    assert p.read_text() == '{"a": 1}\n{"b": 2}\n'
    p.write_text('{"a": 1}\n{"b": \n')
    repair_tail(p)
    assert p.read_text() == '{"a": 1}\n'
    assert repair_tail(p) == 0


def test_workers_shard_one_run_deterministically(tmp_path):
    single = generate(make_cfg("domain=telecom", "num_dialogues=30", f"out_dir={tmp_path / 'single'}"))
    sharded = tmp_path / "sharded"
    for i in (1, 0):
        generate(make_cfg("domain=telecom", "num_dialogues=30", "workers=2", f"worker_index={i}",
                          f"out_dir={sharded}"))
    records = RunDir(sharded).records()
    assert len(records) == 30 and len({r["id"] for r in records}) == 30
    for path in (sharded / "shards").glob("part-*.jsonl"):
        worker = int(path.name.split("-")[1])
        assert all(json.loads(line)["meta"]["index"] % 2 == worker for line in path.read_text().splitlines())
    assert {r["id"] for r in records} == {r["id"] for r in RunDir(single).records()}
    assert (sharded / "stats.json").exists()  # the last worker to finish exported the whole run


def test_every_knob_either_defines_the_run_or_is_safe_to_change():
    """A new knob must be classified: a resume refuses a change of an IDENTITY_KEYS knob, and SAFE_KEYS are the
    ones docs/generate.md lists as safe to change."""
    assert set(make_cfg().keys()) == set(IDENTITY_KEYS) | set(SAFE_KEYS)
    assert not set(IDENTITY_KEYS) & set(SAFE_KEYS)
    documented = (Path(__file__).parents[1] / "docs" / "generate.md").read_text()
    assert all(f"`{key}`" in documented for key in SAFE_KEYS)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    out = tmp_path_factory.mktemp("three") / "run"
    generate(make_cfg("domain=retail", "num_dialogues=3", f"out_dir={out}"))
    return out


@pytest.mark.parametrize("change, named", [
    ("seed=1", "different seed"), ("max_dialogue_bytes=100000", "different max_dialogue_bytes"),
    ("max_messages=50", "different max_messages"), ("policy=report", "different policy"),
    ("llm.endpoints.default.max_reply_bytes=1000", "different llm"),
])
def test_resume_with_different_settings_is_refused(three, change, named):
    with pytest.raises(ToolturnError, match=named):
        generate(make_cfg("domain=retail", "num_dialogues=3", change, f"out_dir={three}"))


def test_an_endpoint_written_before_a_key_existed_is_the_same_endpoint():
    """A run's config.yaml from before an endpoint key existed (the key absent) agrees with today's node, where the
    key is at its default; a key at another value does not."""
    now = plain_config(make_cfg("llm=external", "llm.endpoints.default.model=m", "llm.endpoints.default.base_url=u"))
    old = json.loads(json.dumps(now))
    for key in ("lora", "extra_args", "max_reply_bytes", "max_content_chars", "cache", "min_concurrency"):
        del old["llm"]["endpoints"]["default"][key]
    assert identity_values(old) == identity_values(now)
    old["llm"]["endpoints"]["default"]["max_reply_bytes"] = 1000
    assert identity_values(old)["llm"] != identity_values(now)["llm"]


def test_resume_with_a_safe_change_goes_on(three):
    generate(make_cfg("domain=retail", "num_dialogues=3", "concurrency=2", "shard_size=2", "max_drop_streak=5",
                      "llm.endpoints.default.timeout_s=5", "llm.endpoints.default.max_concurrency=1",
                      f"out_dir={three}"))
    assert len(RunDir(three).records()) == 3


@pytest.mark.parametrize("tear", [lambda line: line[: len(line) // 2],  # the write cut short
                                  lambda line: line[: len(line) // 2] + "\n"],  # a line of garbage
                         ids=["unterminated", "corrupt"])
def test_a_torn_last_record_that_the_log_lists_is_generated_again(tmp_path, tear):
    """The log says index i was kept, but its record is torn (a crash lost the end of the part file): repair cuts
    it and generates index i again, so the run still holds exactly the first valid indices."""
    out = tmp_path / "run"
    cfg = make_cfg("domain=retail", "num_dialogues=10", f"out_dir={out}")
    generate(cfg)
    part, expected = next((out / "shards").glob("part-*.jsonl")), check_run(out, 10)
    good = part.read_text().splitlines()
    part.write_text("\n".join(good[:-1]) + "\n" + tear(good[-1]))
    if not tear("x").endswith("\n"):  # readers skip an unterminated line: the audit sees the log disagree
        report = audit_run(RunDir(out))
        assert not report.ok and any("logged as kept" in m and "no shard holds it" in m for m in report.mismatches)
    generate(cfg)
    assert check_run(out, 10) == expected
    assert audit_run(RunDir(out)).ok
    indices = [json.loads(line)["index"] for line in (out / "shards" / "log-0000.jsonl").read_text().splitlines()]
    assert sorted(indices) == sorted(set(indices))  # the stale line was replaced, not doubled


@pytest.mark.parametrize("edit, says", [
    (lambda part, log: part.write_text("".join(part.read_text().splitlines(True)[:3] + part.read_text().splitlines(
        True)[4:])), "is logged as kept (record"),
    (lambda part, log: log.write_text("".join(line for line in log.read_text().splitlines(True)
                                              if json.loads(line)["index"] != 4)),
     "dialogue index 4 is not logged as kept"),
    (lambda part, log: log.write_text(log.read_text() + log.read_text().splitlines(True)[5]),
     "log-0000.jsonl: index 5 is logged twice"),
])
def test_the_audit_notices_a_log_that_disagrees_with_the_shards(tmp_path, edit, says):
    out = tmp_path / "run"
    generate(make_cfg("domain=retail", "num_dialogues=8", f"out_dir={out}"))
    edit(next((out / "shards").glob("part-*.jsonl")), out / "shards" / "log-0000.jsonl")
    report = audit_run(RunDir(out))
    assert not report.ok and any(says in m for m in report.mismatches), report.mismatches


def test_a_gap_in_the_logged_indices_is_a_mismatch(tmp_path):
    out = tmp_path / "run"
    generate(make_cfg("domain=retail", "num_dialogues=8", f"out_dir={out}"))
    log = out / "shards" / "log-0000.jsonl"
    log.write_text(log.read_text() + json.dumps({"index": 40, "id": None, "drop_reason": "x"}) + "\n")
    report = audit_run(RunDir(out))
    assert any("index 8 was never finished although later ones were" in m for m in report.mismatches), report.mismatches


@pytest.mark.parametrize("domain", ["retail", "sqlite"])
def test_workers_starting_together_set_the_domain_up_once(tmp_path, sample_dbs, domain):
    """The documented Slurm pattern: all array tasks start at once. The first sets the domain up under the set-up
    lock, the others wait and reuse it; no worker sees a half-built database (nor blames a bring-your-own one)."""
    out = tmp_path / "run"
    source = ["domain=sqlite", f"domain.path={sample_dbs['classic']}", "domain.name=classic"] \
        if domain == "sqlite" else ["domain=retail"]
    procs = [subprocess.Popen([str(BIN / "toolturn-generate"), *source, "num_dialogues=12", "workers=4",
                               f"worker_index={i}", f"out_dir={out}", "progress=false", "logger=none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e[-600:] for e in errors]
    records = RunDir(out).records()
    assert len(records) == 12 and len({r["id"] for r in records}) == 12
    assert audit_run(RunDir(out)).ok
    assert not [f.name for f in (out / "domains").rglob(".*") if f.is_file()]  # no build or temp file left


def test_processes_run_a_run_s_workers_and_pass_a_signal_on(tmp_path):
    """`processes=2`: one child per worker; SIGTERM to the command reaches both (each stops, its work saved), no child
    outlives it, and re-running the command finishes with the records that two plain worker commands make."""
    def cmd(url, out, *extra):
        return [*(a for a in command(url, out) if not a.startswith("num_dialogues=")), "num_dialogues=12",
                "workers=2", *extra]

    with MockServer(World()) as server:
        for i in (0, 1):
            subprocess.run(cmd(server.base_url, tmp_path / "plain", f"worker_index={i}"), check=True,
                           capture_output=True, timeout=600)
    expected = check_run(tmp_path / "plain", 12)

    run = tmp_path / "run"
    locks = [run / f".worker-{i:04d}.lock" for i in (0, 1)]
    gate = Gate(World(), 3)
    with MockServer(gate) as server:
        proc = subprocess.Popen(cmd(server.base_url, run, "processes=2"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # both children hold their worker's lock, and the gate holds requests: neither child can finish
            wait_until(lambda: all(p.exists() and p.read_text().strip() for p in locks) and gate.held > 0, proc,
                       "both workers running behind the gate")
            children = [int(p.read_text()) for p in locks]
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=600)
        finally:
            gate.release()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert sum(line.startswith("interrupted") for line in err.splitlines()) == 2, err
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert committed(run) < 12
    with MockServer(World()) as server:
        done = subprocess.run(cmd(server.base_url, run, "processes=2"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert check_run(run, 12) == expected
    assert audit_run(RunDir(run)).ok
