"""Runs survive: SIGKILL at several points then re-running finishes with exactly num_dialogues records."""

import json
import signal
import subprocess
import time

import pytest
from conftest import BIN, make_cfg
from toolturn.core.errors import ToolturnError
from toolturn.core.files import repair_tail
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate

N = 300


def command(out_dir, n=N):
    return [str(BIN / "toolturn-generate"), "domain=airline", f"num_dialogues={n}", "concurrency=8", "seed=5",
            f"out_dir={out_dir}", "progress=false", "logger=none"]


def check_run(run_dir, n):
    lines = [line for p in sorted((run_dir / "shards").glob("part-*.jsonl")) for line in p.read_text().split("\n")]
    assert lines[-1] == ""  # no torn last line
    records = [json.loads(line) for line in lines if line]
    assert len(records) == n
    assert len({r["id"] for r in records}) == n
    return [r["id"] for r in sorted(records, key=lambda r: r["meta"]["index"])]


def committed(run_dir) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (run_dir / "shards").glob("part-*.jsonl"))


def kill_when(run_dir, reached, timeout=120) -> int:
    """Start the run, SIGKILL it as soon as `reached()` holds (polling the run dir, not the clock), and
    return the records it had committed. The kill must land before the run ends."""
    proc = subprocess.Popen(command(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill point"
            assert time.monotonic() < deadline, "kill point not reached in time"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return committed(run_dir)


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume(tmp_path):
    baseline = tmp_path / "baseline"
    subprocess.run(command(baseline), check=True, capture_output=True, timeout=300)
    expected = check_run(baseline, N)

    run = tmp_path / "killed"
    # during domain set-up (config written, no shard yet), then at three record counts: each resume goes on
    points = [lambda: (run / "config.yaml").exists()] + [lambda k=k: committed(run) >= k for k in (5, 90, 200)]
    saved = [kill_when(run, reached) for reached in points]
    assert saved[1] >= 5 and saved[2] >= 90 and 200 <= saved[3] < N, saved
    done = subprocess.run(command(run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_run(run, N) == expected  # same records as the uninterrupted run, nothing lost or doubled
    assert audit_run(RunDir(run)).ok
    sessions = (run / "sessions.jsonl").read_text().splitlines()
    assert len(sessions) >= 1


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


def test_resume_with_different_settings_is_refused(tmp_path):
    generate(make_cfg("domain=retail", "num_dialogues=3", f"out_dir={tmp_path}"))
    with pytest.raises(ToolturnError, match="different seed"):
        generate(make_cfg("domain=retail", "num_dialogues=3", "seed=1", f"out_dir={tmp_path}"))
    generate(make_cfg("domain=retail", "num_dialogues=3", "concurrency=2", f"out_dir={tmp_path}"))  # resumes
    assert len(RunDir(tmp_path).records()) == 3
