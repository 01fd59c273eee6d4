"""toolturn-eval end to end on CPU: oracle / do-nothing / mock-served / SmolLM2 assistants, every eval config
composed, held-out tasks disjoint from training, infrastructure errors counted and never scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mock_openai import Fault, MockServer, completion

from toolturn.core.errors import ToolturnError
from toolturn.evaluate.run import evaluate

CONF = Path(__file__).parents[1] / "conf"


def eval_cfg(*overrides: str):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("evaluate", overrides=["progress=false", "logger=none", *overrides])


@pytest.mark.parametrize("group,name", [(g, p.stem) for g in ("eval", "user", "endpoint", "logger", "model", "domain")
                                        for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_eval_config_composes(group, name):
    extra = {"sqlite": ["domain.path=x.db"], "external": ["endpoint.base_url=http://h/v1", "endpoint.model=m"]}
    cfg = eval_cfg(f"{group}={name}", *extra.get(name, []))
    assert cfg[group] is not None and cfg.n >= 1


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_oracle_scores_one_and_do_nothing_zero_on_writes_with_all_outputs(tmp_path):
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "toolturn.evaluate.run", "checkpoints=[oracle]", "n=2", "num_tasks=8", "seed=3",
           "logger=wandb", "progress=false", f"out_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"WANDB_SILENT": "true",
                                                                                 **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    oracle, floor = m["checkpoints"]["oracle"], m["checkpoints"]["do_nothing"]
    assert oracle["pass_hat_k"] == {"1": 1.0, "2": 1.0} and oracle["pass_at_k"]["2"] == 1.0
    assert floor["per_task"] and m["floor"]["pass_hat_1_on_write_tasks"] in (0.0, None)
    writes = [r for r in rows(out) if r["checkpoint"] == "do_nothing" and r["needs_write"]]
    assert writes and all(r["reward"] == 0.0 and not r["parts"]["db_match"] for r in writes)
    sample = rows(out)[0]
    assert {"checkpoint", "task_id", "seed", "reward", "parts", "termination", "messages"} <= set(sample)
    assert all(r["parts"]["policy_compliant"] and r["parts"]["refusals_explained"] for r in rows(out)
               if r["checkpoint"] == "oracle")
    assert json.loads((out / "tasks.meta.json").read_text())["refusal_share"] == 0.15
    report = (out / "report.md").read_text()
    assert "rule:text" in report and "do-nothing floor (retail)" in report and "identical samples" in report
    assert (out / "pass_hat_k.png").stat().st_size > 1000
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    # same tasks for a later checkpoint; other task settings are refused
    before = (out / "tasks.jsonl").read_bytes()
    evaluate(eval_cfg("checkpoints=[oracle]", "n=2", "num_tasks=8", "seed=3", f"out_dir={out}"))
    assert (out / "tasks.jsonl").read_bytes() == before and len(rows(out)) == 8 * 2 + 8
    with pytest.raises(ToolturnError, match="other settings"):
        evaluate(eval_cfg("checkpoints=[oracle]", "n=2", "num_tasks=9", "seed=3", f"out_dir={out}"))
    with pytest.raises(ToolturnError, match="refusal_share: 0.15 -> 0.3"):
        evaluate(eval_cfg("checkpoints=[oracle]", "n=2", "num_tasks=8", "seed=3", "eval.refusal_share=0.3",
                          f"out_dir={out}"))


@pytest.mark.parametrize("knob,message", [
    ("eval.refusal_share=1.5", "eval.refusal_share must be a probability"),
    ("eval.refusal_share=yes", "eval.refusal_share must be a probability"),
    ("eval.difficulty={easy:0,medium:0,hard:0}", "eval.difficulty must be a mapping of easy/medium/hard"),
    ("eval.difficulty={easy:-1,hard:1}", "eval.difficulty must be a mapping of easy/medium/hard"),
    ("+eval.difficulty.trivial=1", "eval.difficulty must be a mapping of easy/medium/hard"),
    ("eval.tasks_per_episode=0", "eval.tasks_per_episode must be a positive integer"),
    ("sampling.temperature=abc", "sampling.temperature must be a number in [0, 2]"),
    ("n=two", "n must be a positive integer"),
    ("user.max_stall_turns=0", "user.max_stall_turns must be a positive integer"),
    ("user.reveal_per_turn=[2,1]", "user.reveal_per_turn must be two integers"),
    ("endpoint.timeout_s=-1", "endpoint.timeout_s must be a positive number"),
])
def test_bad_task_knobs_are_one_line_errors(knob, message):
    proc = subprocess.run([sys.executable, "-m", "toolturn.evaluate.run", knob, "logger=none", "out_dir=/nonexistent/x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}") and len(proc.stderr.splitlines()) == 1, \
        proc.stderr


def test_overlap_with_training_tasks_is_a_clear_error(tmp_path):
    out = tmp_path / "ev"
    evaluate(eval_cfg("checkpoints=[do_nothing]", "n=1", "num_tasks=2", f"out_dir={out}"))
    task = json.loads((out / "tasks.jsonl").read_text().splitlines()[0])["tasks"][0]
    run = tmp_path / "train-run"
    (run / "shards").mkdir(parents=True)
    record = {"id": "x", "messages": [], "tools": [], "meta": {"tasks": [{"id": "retail-s0-d0-t0", "gold": task}]}}
    (run / "shards" / "part-0-0.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ToolturnError, match="same plan and facts as a training task"):
        evaluate(eval_cfg("checkpoints=[do_nothing]", "n=1", "num_tasks=2", f"out_dir={out}", f"train_data=[{run}]"))
    # the same id under another plan (e.g. a task file written by hand): caught by id
    record["meta"]["tasks"] = [{"id": task["id"], "gold": {**task, "facts": {"other": 1}}}]
    (run / "shards" / "part-0-0.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ToolturnError, match="is also a training task id"):
        evaluate(eval_cfg("checkpoints=[do_nothing]", "n=1", "num_tasks=2", f"out_dir={out}", f"train_data=[{run}]"))


def _external(server: MockServer, out: Path, *extra: str):
    return eval_cfg("endpoint=external", f"endpoint.base_url={server.base_url}", "endpoint.model=mock",
                    "endpoint.max_retries=1", "checkpoints=[base]", "n=2", "num_tasks=2", "infra_retries=1",
                    "user.max_stall_turns=1", f"out_dir={out}", *extra)


def test_infrastructure_errors_are_counted_never_scored_and_retried_on_resume(tmp_path):
    with MockServer(lambda request: Fault.status(503)) as server:
        with pytest.raises(ToolturnError, match="could be scored"):
            evaluate(_external(server, tmp_path / "ev"))
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["checkpoints"]["base"]
    assert m["scored_samples"] == 0 and m["infra_error_samples"] == 4 and len(m["infra_errors"]) == 2
    assert m["pass_hat_k"]["1"] is None  # not a 0: nothing was scored
    with MockServer(lambda request: completion("Sorry, I cannot help.")) as server:  # back up: resume
        m = evaluate(_external(server, tmp_path / "ev"))["checkpoints"]["base"]
    assert m["scored_samples"] == 4 and m["infra_error_samples"] == 0 and m["pass_hat_k"]["1"] == 0.0


def test_unparsable_model_output_is_the_models_failure_not_retried(tmp_path):
    body = '{"error": "json parser could not parse region as JSON.\\nContent: \'{bad\'"}'
    with MockServer(lambda request: Fault.status(500, body)) as server:
        m = evaluate(_external(server, tmp_path / "ev"))["checkpoints"]["base"]
        sent = list(server.requests)
    assert m["scored_samples"] == 4 and m["infra_error_samples"] == 0
    assert m["events"]["model_failure_model_output"] >= 4
    assistant = [r for r in sent if r.get("tools")]
    assert len(assistant) == m["events"]["model_failure_model_output"]  # one request per turn: no retries
    seeds = {r["seed"] for r in assistant}
    assert len(seeds) == len(assistant)  # every request its own seed
    assert all(r["temperature"] == 1.0 and r["max_tokens"] == 256 and "generation_config" not in r for r in assistant)
