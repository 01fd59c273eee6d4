"""End-to-end generation: both paradigms, built-in and imported domains, export, stats and audit."""

import json

import pytest
from conftest import make_cfg
from datasets import load_from_disk
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate


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
    assert stats["tasks"]["mean"] >= 2.0
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
    tool_msg = next(m for m in rec["messages"] if m["role"] == "tool")
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
