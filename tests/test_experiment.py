"""toolturn-run: every experiment config composes and dry-runs; an experiment's stages run end to end, are
skipped when unchanged and re-run exactly downstream of a change; a killed run resumes; the report says what
was measured."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mock_openai import MockServer, completion

from toolturn.experiment.run import run

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures" / "conf"
RUN = [sys.executable, "-m", "toolturn.experiment.run"]


def run_cfg(*overrides: str):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("run", overrides=list(overrides))


def test_the_shipped_experiments_are_the_documented_ones():
    assert EXPERIMENTS == ["ablation_cpu", "demo", "paper_table2", "paper_table3"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_dry_runs(name, tmp_path, capsys):
    """Every stage's config is composed and checked by its own stage's check; nothing runs or is written."""
    assert run(run_cfg(f"experiment={name}", "dry_run=true", "logger=none", f"out_dir={tmp_path / 'x'}")) is None
    printed = capsys.readouterr().out
    stages = re.findall(r"^\[(\d+)/(\d+)\] (\S+)", printed, re.M)
    assert stages and stages[-1][2] == "report" and len(stages) == int(stages[0][1])
    kinds = {s[2].split(":")[0] for s in stages}
    assert {"train", "evaluate", "report"} <= kinds and kinds & {"generate", "convert"}
    assert printed.count(f"out_dir={tmp_path / 'x'}") >= len(stages) - 1 - printed.count("toolturn-audit") \
        - printed.count("toolturn.train.convert")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override,message", [
    ("+experiment.common.generate.num_dialogue=3", "stage generate:user_oriented: unknown config key 'num_dialogue'"),
    ("experiment.models.tuned.data=[user_orientd]",
     "experiment.models.tuned.data names dataset 'user_orientd', which the experiment does not define (did you mean "
     "'user_oriented'?)"),
    ("+experiment.evaluations.retail.n=0", "stage evaluate:retail:base: n must be a positive integer"),
    ("stage=trian", "stage must be all or one of generate, audit, train, evaluate, report"),
    ("+experiment.datasets.user_oriented.source=apigen", "experiment.datasets.user_oriented.source is 'apigen'"),
    ("rerun=[evaluate:retail:tunde]", "rerun: no stage or kind of stage named 'evaluate:retail:tunde' (did you mean "
     "evaluate:retail:tuned?)"),
])
def test_bad_experiments_are_one_line_errors_before_anything_runs(override, message, tmp_path):
    proc = subprocess.run([*RUN, "experiment=demo", "logger=none", f"out_dir={tmp_path / 'x'}", override],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ end to end


def tiny(out: Path, url: str, *overrides: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOOLTURN_TEST_URL": url, "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_MODE", None)
    proc = subprocess.run([*RUN, "experiment=tiny", f"hydra.searchpath=[file://{FIXTURES}]", f"out_dir={out}",
                           "heartbeat_s=600", *overrides], capture_output=True, text=True, env=env, timeout=900, **kw)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def statuses(stdout: str) -> dict[str, str]:
    """{stage: ran | skipped} from the progress lines."""
    out = {}
    for stage, what in re.findall(r"^\[\d+/\d+\] (\S+): (running|skipped)", stdout, re.M):
        out[stage] = "ran" if what == "running" else "skipped"
    return out


@pytest.fixture(scope="module")
def server():
    with MockServer(lambda request: completion("I can look into that for you.")) as s:
        yield s


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, server):
    out = tmp_path_factory.mktemp("exp") / "tiny"
    proc = tiny(out, server.base_url)
    return out, proc


@pytest.mark.slow
def test_every_stage_runs_and_the_report_says_what_was_measured(experiment):
    out, proc = experiment
    assert set(statuses(proc.stdout).values()) == {"ran"}
    assert list(statuses(proc.stdout)) == ["generate:uo", "audit:uo", "generate:to", "audit:to", "train:tuned",
                                           "evaluate:retail:oracle", "evaluate:retail:tuned", "report"]
    report = (out / "report" / "report.md").read_text()
    assert f"report: {out / 'report' / 'report.md'}" in proc.stdout
    summary = json.loads((out / "report" / "summary.json").read_text())
    arms = summary["evaluations"]["retail"]
    assert arms["oracle"]["pass_hat_1"] == 1.0 and arms["tuned"]["pass_hat_1"] == 0.0
    assert arms["tuned"]["floor"] == 0.0 and arms["tuned"]["scored"] == arms["tuned"]["samples"] == 8
    (pair,) = summary["paired"]
    assert (pair["a"], pair["b"], pair["tasks"], pair["diff"], pair["losses"]) == ("tuned", "oracle", 4, -1.0, 4)
    for png in ("pass_hat_k-retail.png", "loss.png", "datasets.png"):
        assert (out / "report" / png).stat().st_size > 1000 and f"]({png})" in report
    assert "toolturn-run experiment=tiny" in report and "| uo | user_oriented | 6 |" in report
    assert "| tuned | uo | 4 |" in report  # training: model, data, steps
    assert "tuned - oracle = -1.000" in proc.stdout


@pytest.mark.slow
def test_unchanged_stages_are_skipped_and_a_change_reruns_exactly_downstream(experiment, server):
    out, _ = experiment
    again = tiny(out, server.base_url)
    assert set(statuses(again.stdout).values()) == {"skipped"}
    assert "unchanged since" in again.stdout

    # the task-oriented data feeds nothing but the report; a dry run predicts what a run then does
    plan = tiny(out, server.base_url, "experiment.datasets.to.num_dialogues=5", "dry_run=true").stdout
    predicted = dict(re.findall(r"^\[\d+/\d+\] (\S+) .*\n    (would run|cached)", plan, re.M))
    changed = statuses(tiny(out, server.base_url, "experiment.datasets.to.num_dialogues=5").stdout)
    assert predicted == {s: ("would run" if v == "ran" else "cached") for s, v in changed.items()}
    assert {s for s, v in changed.items() if v == "ran"} == {"generate:to", "audit:to", "report"}

    # a training knob: the model changes, so do its evaluation and the report; the oracle's does not
    changed = statuses(tiny(out, server.base_url, "experiment.datasets.to.num_dialogues=5",
                            "experiment.common.train.max_steps=3").stdout)
    assert {s for s, v in changed.items() if v == "ran"} == {"train:tuned", "evaluate:retail:tuned", "report"}
    assert json.loads((out / "train" / "tuned" / "metrics.json").read_text())["steps"] == 3

    # one kind of stage alone
    alone = statuses(tiny(out, server.base_url, "experiment.datasets.to.num_dialogues=5",
                          "experiment.common.train.max_steps=3", "stage=evaluate").stdout)
    assert alone == {"evaluate:retail:oracle": "skipped", "evaluate:retail:tuned": "skipped"}

    # one stage forced (after a code change): it alone is made again; its metrics are the same, so is the report
    forced = tiny(out, server.base_url, "experiment.datasets.to.num_dialogues=5", "experiment.common.train.max_steps=3",
                  "rerun=[evaluate:retail:oracle]").stdout
    assert {s for s, v in statuses(forced).items() if v == "ran"} == {"evaluate:retail:oracle"}, forced
    assert "rerun= asks for it" in forced


@pytest.mark.slow
def test_an_output_changed_by_hand_is_made_again(experiment, server):
    out, _ = experiment
    tiny(out, server.base_url)  # back to the fixture's settings, whatever an earlier test changed
    metrics = out / "evaluate" / "retail" / "oracle" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"n"', '"n" ', 1))
    proc = tiny(out, server.base_url)
    ran = statuses(proc.stdout)
    assert "evaluate:retail:oracle: running (its output was changed after it finished" in proc.stdout
    # the oracle is deterministic: made again, its metrics are what they were, so nothing downstream re-runs
    assert {s for s, v in ran.items() if v == "ran"} == {"evaluate:retail:oracle"}


@pytest.mark.slow
def test_a_stage_that_needs_an_unrun_stage_says_so(tmp_path, server):
    proc = tiny(tmp_path / "t", server.base_url, "stage=train", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: stage audit:uo has not run yet; run it first (toolturn-run without "
                                   "stage=, or stage=audit)")


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(tmp_path, server):
    out = tmp_path / "k"
    env = {**os.environ, "TOOLTURN_TEST_URL": server.base_url, "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    steps = ["experiment.common.train.max_steps=8", "experiment.common.train.eval_steps=2"]
    proc = subprocess.Popen([*RUN, "experiment=tiny", f"hydra.searchpath=[file://{FIXTURES}]", f"out_dir={out}",
                             "logger=none", *steps], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    first = out / "train" / "tuned" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.exists(), proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)  # the training child dies with it (PR_SET_PDEATHSIG)
    proc.wait()
    again = tiny(out, server.base_url, "logger=none", *steps)
    ran = statuses(again.stdout)
    assert ran["generate:uo"] == ran["audit:uo"] == "skipped"
    assert "train:tuned: running (resuming an unfinished run)" in again.stdout
    log = (out / "logs" / "train--tuned.log").read_text()
    assert re.search(r"resuming from .*checkpoint-\d+", log)
    assert json.loads((out / "train" / "tuned" / "metrics.json").read_text())["steps"] == 8


@pytest.mark.slow
def test_two_runs_on_one_experiment_dir_are_refused(tmp_path, server):
    from toolturn.core.files import exclusive_lock

    out = tmp_path / "busy"
    out.mkdir()
    with exclusive_lock(out / ".lock", "test"):
        proc = tiny(out, server.base_url, "logger=none", check=False)
    assert proc.returncode == 2 and "is in use by another process" in proc.stderr


def _artifacts(stage_dir: Path) -> tuple[set[str], list[tuple[str, str, str, bool]]]:
    """(the W&B groups, [(name, type, digest, used as input)]) of a stage's offline W&B runs."""
    from toolturn.train.lineage import read_offline_run

    groups, found = set(), []
    runs = sorted(stage_dir.glob("wandb/offline-run-*"))
    assert runs, f"no offline W&B run under {stage_dir}"
    for run_dir in runs:
        for record in read_offline_run(run_dir):
            if record.HasField("run"):
                groups.add(record.run.run_group)
            if record.HasField("artifact"):
                a = record.artifact
                found.append((a.name, a.type, a.digest, a.use_after_commit))
    return groups, found


@pytest.mark.slow
def test_one_lineage_across_stages_in_one_wandb_group(experiment):
    """evaluation uses model uses dataset: the same artifact (name and digest) is one stage's output and the
    next one's input, and every stage's run is in the experiment's group."""
    out, _ = experiment
    groups, data = _artifacts(out / "data" / "uo")
    ((dataset, _, digest, used),) = [a for a in data if a[1] == "dataset"]
    assert not used and dataset.startswith("dataset-") and groups == {"tiny"}

    groups, train = _artifacts(out / "train" / "tuned")
    assert groups == {"tiny"}
    assert (dataset, "dataset", digest, True) in train
    ((model, _, model_digest, used),) = [a for a in train if a[1] == "model"]
    assert not used and model.startswith("model-")

    groups, evaluation = _artifacts(out / "evaluate" / "retail" / "tuned")
    assert groups == {"tiny"}
    assert (model, "model", model_digest, True) in evaluation

    groups, _ = _artifacts(out / "report")
    assert groups == {"tiny"}


def test_a_rate_moved_only_beyond_the_pooled_standard_error():
    """0/38 -> 7/46 is 2.5 pooled standard errors, 0/38 -> 2/42 only 1.4 (the unpooled error of 0/38 is zero, so
    any change from it would have "moved"), 16/16 -> 14/16 only 1.5."""
    from toolturn.experiment.report import moved

    def entry(**rates):
        return {"m": {"behaviour": {k: {"value": x / n, "n": n} for k, (x, n) in rates.items()}}}

    up, still = moved(entry(a=(0, 38), b=(0, 38), c=(16, 16)), entry(a=(7, 46), b=(2, 42), c=(14, 16)))
    assert [line.split(":")[0] for line in up] == ["a"]
    assert [line.split(":")[0] for line in still] == ["b", "c"]
