"""End-to-end generation: both paradigms, built-in and imported domains, export, stats and audit."""

import json

import pytest
from conftest import cli, make_cfg
from datasets import load_from_disk
from omegaconf import OmegaConf
from toolturn.core.lineage import artifact_name, dataset_manifest
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate
from toolturn.generate.tracking import TABLE_DIALOGUES, TABLE_KEY, stats_numbers


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_dbs):
    root = tmp_path_factory.mktemp("runs")
    classic = ("domain=sqlite", f"domain.path={sample_dbs['classic']}", "domain.name=classic")
    spec = {
        "user_retail": ("pipeline=user_oriented", "domain=retail"),
        "task_retail": ("pipeline=task_oriented", "domain=retail"),
        "user_classic": ("pipeline=user_oriented", *classic),
        "task_classic": ("pipeline=task_oriented", *classic),
    }
    return {k: generate(make_cfg(*v, "num_dialogues=50", f"out_dir={root / k}")) for k, v in spec.items()}


@pytest.mark.parametrize("run", ["user_retail", "user_classic"])
def test_user_oriented_dialogues_are_dense(runs, run):
    stats = json.loads((runs[run] / "stats.json").read_text())
    assert stats["dialogues"] == 50
    assert stats["tasks"]["mean"] >= 1.9  # one visit never repeats a scenario (issue 15): 1.96 tasks on seed 0
    assert stats["user_turns_per_task"] >= 2.0
    assert audit_run(RunDir(runs[run])).ok


@pytest.mark.parametrize("run", ["task_retail", "task_classic"])
def test_task_oriented_dialogues_are_short(runs, run):
    stats = json.loads((runs[run] / "stats.json").read_text())
    assert stats["dialogues"] == 50
    assert stats["user_turns_per_task"] <= 1.5
    assert audit_run(RunDir(runs[run])).ok


def test_the_efficiency_trap_shows_in_the_stats(runs):
    user = json.loads((runs["user_retail"] / "stats.json").read_text())
    task = json.loads((runs["task_retail"] / "stats.json").read_text())
    assert user["turns"]["mean"] > 2 * task["turns"]["mean"]
    # the policy's confirmation turn before every write adds a user turn per write task in both paradigms
    assert user["user_turns_per_task"] > 1.5 * task["user_turns_per_task"]


def test_export_is_trl_ready(runs):
    run = runs["user_retail"]
    ds = load_from_disk(str(run / "dataset"))
    assert len(ds) == 50 and {"messages", "tools", "id", "meta"} <= set(ds.column_names)
    row = ds[0]
    tools = json.loads(row["tools"])
    assert tools[0]["type"] == "function"
    calls = [c for m in row["messages"] if m["tool_calls"] for c in m["tool_calls"]]
    assert calls and all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    assert "reasoning_content" not in ds.features["messages"].feature  # no model returned reasoning: no such field
    stats = json.loads((run / "stats.json").read_text())
    for key in ("steps", "turns", "tasks", "user_turns_per_task", "tool_calls", "tool_errors", "drops", "throughput"):
        assert key in stats
    assert stats["throughput"]["dialogues_per_s"] > 0
    assert {p.name for p in (run / "plots").iterdir()} >= {"turns.png", "steps.png", "tasks.png"}
    assert "Table-1" in (run / "README.md").read_text()


def test_records_follow_the_contract(runs):
    records = RunDir(runs["user_retail"]).records()
    assert len({r["id"] for r in records}) == 50
    r = records[0]
    assert r["messages"][0]["role"] == "system"
    meta = r["meta"]
    assert set(meta["counts"]) >= {"turns", "user_turns", "steps", "tasks", "tool_calls", "tool_errors"}
    assert meta["judge"]["judgment"] == "valid" and meta["pipeline"] == "user_oriented"
    assert all(t["completed"] and t["rubric"] and t["goal"] for t in meta["tasks"])
    tool_names = {t["function"]["name"] for t in r["tools"]}
    called = {c["function"]["name"] for m in r["messages"] for c in m.get("tool_calls") or []}
    assert called <= tool_names and len(tool_names) <= 12
    assert not any("reasoning_content" in m for rec in records for m in rec["messages"])
    difficulties = {t["difficulty"] for rec in records for t in rec["meta"]["tasks"]}
    assert difficulties == {"easy", "medium", "hard"}
    templates = {t["template"] for rec in records for t in rec["meta"]["tasks"]}
    assert len(templates) >= 8


def test_same_seed_same_dialogues(runs, tmp_path):
    again = generate(make_cfg("pipeline=user_oriented", "domain=retail", "num_dialogues=50", "concurrency=1",
                              f"out_dir={tmp_path / 'again'}"))
    a = [(r["id"], r["messages"]) for r in RunDir(runs["user_retail"]).records()]
    b = [(r["id"], r["messages"]) for r in RunDir(again).records()]
    assert a == b


def test_audit_catches_hand_edits(runs, tmp_path):
    import shutil
    run = tmp_path / "edited"
    shutil.copytree(runs["task_retail"], run)
    part = next((run / "shards").glob("part-*.jsonl"))
    lines = part.read_text().splitlines()
    rec = json.loads(lines[3])
    tool_msg = next(m for m in rec["messages"] if m["role"] == "tool" and "1" in m["content"])  # an edit that changes it
    tool_msg["content"] = tool_msg["content"].replace("1", "2", 1)
    lines[3] = json.dumps(rec)
    rec2 = json.loads(lines[7])
    rec2["messages"][1]["content"] += " (edited)"
    lines[7] = json.dumps(rec2)
    part.write_text("\n".join(lines) + "\n")
    report = audit_run(RunDir(run))
    assert not report.ok
    text = "\n".join(report.mismatches)
    assert rec["id"] in text and rec2["id"] in text and "digest" in text


def offline_run(run_dir) -> dict:
    """What an offline W&B run recorded: its run record, summary, history items by key, and artifacts."""
    from toolturn.train.lineage import read_offline_run  # tests may import any stage

    out = {"summary": {}, "history": {}, "artifacts": []}
    for r in read_offline_run(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
        elif kind == "summary":
            out["summary"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
        elif kind == "history":
            out["history"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "artifact":
            out["artifacts"].append(r.artifact)
    return out


def test_the_worker_that_completes_a_run_logs_it_to_wandb_and_a_rerun_continues_that_run(tmp_path):
    out = tmp_path / "run"

    def worker(index: int, *logger: str) -> str:
        proc = cli("toolturn-generate", "num_dialogues=6", "workers=2", f"worker_index={index}", "progress=false",
                   f"out_dir={out}", *(logger or ("logger=wandb", "logger.group=exp1")))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    worker(0)  # half the run: nothing exported, nothing logged
    assert not (out / "wandb").exists() and not (out / "wandb_run_id").exists()
    assert "W&B run in" in worker(1)
    run_id = (out / "wandb_run_id").read_text().strip()
    assert len(list((out / "wandb").glob(f"offline-run-*-{run_id}"))) == 1
    worker(1)  # the finished run again: exported and logged again into the same W&B run, whose dir replaces the first
    stats = json.loads((out / "stats.json").read_text())
    worker(0, "logger=none")  # the logger may differ on resume
    assert (out / "wandb_run_id").read_text().strip() == run_id
    [again] = (out / "wandb").glob("offline-run-*")
    assert again.name.endswith(f"-{run_id}")
    logged = offline_run(again)
    assert (logged["run"].run_id, logged["run"].run_group, logged["run"].job_type) == (run_id, "exp1", "generate")
    numbers = stats_numbers(stats)
    assert {k: logged["summary"].get(k) for k in numbers} == numbers
    assert numbers["dialogues"] == 6 and numbers["turns/mean"] == stats["turns"]["mean"]
    for plot in ("turns", "steps", "tasks", "user_turns_per_task"):
        assert logged["history"][f"plots/{plot}/_type"] == "image-file"
    assert logged["history"][f"{TABLE_KEY}/_type"] == "table-file"
    assert logged["history"][f"{TABLE_KEY}/nrows"] == TABLE_DIALOGUES
    datasets = [a for a in logged["artifacts"] if a.type == "dataset"]
    assert [a.name for a in datasets] == [artifact_name("dataset", dataset_manifest(out))]
    assert not datasets[0].use_after_commit  # an output: training declares the same artifact as its input
    assert json.loads(datasets[0].metadata)["dialogues"] == 6


def test_a_run_opened_while_another_is_still_open_is_a_run_of_its_own(tmp_path):
    """wandb.init's default hands back a run still open in the process: a test that failed before finishing its
    run made the next one log into the wrong directory."""
    from toolturn.core.wandb_run import open_run

    cfg = OmegaConf.create({"name": "wandb", "mode": "offline"})
    first = open_run(cfg, tmp_path / "first", "first", {}, "train")
    second = open_run(cfg, tmp_path / "second", "second", {}, "train")
    try:
        assert second.run.id != first.run.id and second.run_dir.is_relative_to(tmp_path / "second")
    finally:
        second.finish()
        first.finish()


def test_an_offline_run_records_an_artifact_it_uses_as_its_input(tmp_path):
    """WandbRun.artifact(use=True) offline goes through wandb's private Run._log_artifact (the public
    use_artifact refuses offline mode): wandb is pinned below 0.32 (pyproject.toml), and this checks the
    artifact still lands in the offline run as a use, so that `wandb sync` links it as the run's input."""
    from toolturn.core.wandb_run import open_run

    run = open_run(OmegaConf.create({"name": "wandb", "mode": "offline"}), tmp_path, "t", {}, "train")
    run.artifact("dataset", {"records": ["a"]}, {"note": "x"}, use=True)
    run.finish()
    [logged] = offline_run(next((tmp_path / "wandb").glob("offline-run-*")))["artifacts"]
    assert logged.name == artifact_name("dataset", {"records": ["a"]}) and logged.type == "dataset"
    assert logged.use_after_commit and logged.user_created
