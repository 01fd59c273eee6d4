"""toolturn-eval end to end on CPU: oracle / do-nothing / mock-served / SmolLM2 assistants, every eval config
composed, held-out tasks disjoint from training, infrastructure errors counted and never scored, each
checkpoint's identity recorded (a label that comes to mean another model is refused), and the tool offer
taken from a trained checkpoint's lineage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mock_openai import Fault, MockServer, completion

from toolturn.core.cli import precheck
from toolturn.core.endpoints import EndpointConfig
from toolturn.core.errors import ToolturnError
from toolturn.core.lineage import artifact_name, canonical, identity_manifest, model_identity, short
from toolturn.evaluate.checkpoints import identity
from toolturn.evaluate.run import ADDABLE_KEYS, _summary, evaluate, validate

CONF = Path(__file__).parents[1] / "conf"


def eval_cfg(*overrides: str):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("evaluate", overrides=["progress=false", "logger=none", *overrides])


@pytest.mark.parametrize("group,name", [(g, p.stem) for g in ("eval", "user", "endpoint", "logger", "model", "domain")
                                        for p in sorted((CONF / g).glob("[!_]*.yaml"))])
def test_every_eval_config_passes_the_stages_own_check(group, name):
    extra = {"sqlite": ["domain.path=x.db"], "external": ["endpoint.base_url=http://h/v1", "endpoint.model=m"],
             "synthetic": ["domain.name=clinic"], "synthetic_sql": ["domain.name=clinic"]}
    validate(eval_cfg(f"{group}={name}", *extra.get(name, [])))  # a bad value in the YAML is a ToolturnError


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
    assert not (out / ".lineage").exists()  # rule assistants have no content identity to link
    config = (out / "config.yaml").read_text()
    assert "checkpoints:\n- oracle\n" in config and f"out_dir: {out}\n" in config and "${" not in config
    assert json.loads((out / "identities.json").read_text())["oracle"]["kind"] == "rule"
    assert oracle["identity"]["model"] == "rule:oracle" and oracle["identity"]["sha256"] is None
    assert "- oracle: rule assistant oracle" in report
    # behaviour, over what each rate applies to: the oracle asks first and identifies first; the floor never calls
    b = oracle["behaviour"]
    assert all(b[r]["value"] == 1.0 and b[r]["n"] > 0 for r in ("valid_tool_calls", "identified_first",
                                                                 "confirmed_writes"))
    assert 0 < b["tool_call_turns"]["value"] < 1
    assert floor["behaviour"]["tool_call_turns"]["value"] == 0.0 and floor["behaviour"]["tool_call_turns"]["n"] >= 8
    assert all(floor["behaviour"][r] == {"value": None, "n": 0} for r in ("valid_tool_calls", "identified_first",
                                                                          "confirmed_writes"))
    assert "| do_nothing | 0.000 (of " in report and "| n/a | n/a | n/a |" in report
    # a stratified draw: two of each kind, pass^k per kind, the kind in every row and task
    assert m["task_kinds"] == {"counts": {"read": 2, "write": 2, "refusal": 2, "multi_step": 2}, "skipped": {}}
    assert {k: v["tasks"] for k, v in oracle["per_kind"].items()} == {"read": 2, "write": 2, "refusal": 2,
                                                                      "multi_step": 2}
    assert all(v["pass_hat_k"] == {"1": 1.0, "2": 1.0} for v in oracle["per_kind"].values())
    kinds = {json.loads(line)["id"]: json.loads(line)["kind"] for line in (out / "tasks.jsonl").read_text().splitlines()}
    assert all(r["kind"] == kinds[r["task_id"]] for r in rows(out)) and "| oracle | refusal | 2 | 1.000 | 1.000 |" in report
    # no checkpoint has a lineage: the documented fallback, generation's default offer
    assert m["tool_offer"] == {"tools": 12, "source": "eval.tools_fallback", "trained_with": {}}
    assert "Tool offer: 12 (eval.tools_fallback" in report
    summary = _summary(m)  # what the W&B run's summary holds
    assert summary["oracle/identity"] == "rule assistant oracle" and summary["tool_offer"] == 12
    assert summary["oracle/refusal/pass_hat_2"] == 1.0 and summary["oracle/behaviour/confirmed_writes"] == 1.0
    assert summary["do_nothing/behaviour/valid_tool_calls"] is None and summary["oracle/part/db_match"] == 1.0
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
    ("+eval.difficulty.trivial=1", "unknown config key 'eval.difficulty.trivial'"),
    ("eval.tasks_per_episode=0", "eval.tasks_per_episode must be a positive integer"),
    ("sampling.temperature=abc", "sampling.temperature must be a number in [0, 2]"),
    ("n=two", "n must be a positive integer"),
    ("user.max_stall_turns=0", "user.max_stall_turns must be a positive integer"),
    ("user.reveal_per_turn=[2,1]", "user.reveal_per_turn must be two integers"),
    ("endpoint.timeout_s=-1", "endpoint.timeout_s must be a positive number"),
    ("eval.tools_per_episode=many", "eval.tools_per_episode must be auto or a non-negative integer"),
    ("eval.tools_fallback=-1", "eval.tools_fallback must be a non-negative integer"),
    # what an external endpoint must be told, before anything runs
    ("endpoint=external", "endpoint.base_url is not set; add endpoint.base_url=VALUE"),
    ("endpoint=external endpoint.base_url=http://127.0.0.1:9/v1", "endpoint.model is not set"),  # for base
    ("eval=tau2 endpoint=external endpoint.base_url=http://127.0.0.1:9/v1 checkpoints=[oracle]",
     "endpoint.model is not set"),  # the do-nothing floor's user simulator runs on the base model
    ("user=llm user.endpoint.server=none", "user.endpoint.base_url is not set"),
    ("checkpoints=oracle", "checkpoints must be a list, got 'oracle'; e.g. checkpoints=[oracle]"),
    ("+eval.polcy_file=x", "unknown config key 'eval.polcy_file' (did you mean 'eval.policy_file'?)"),
    ("+policy.fil=x", "unknown config key 'policy.fil'"),
    # keys the stage reads may be added: the next check speaks
    ("+eval.out_tag=x ++endpoint.max_reply_bytes=9 +logger.group=g checkpoints=oracle", "checkpoints must be a list"),
])
def test_bad_task_knobs_are_one_line_errors(knob, message, capsys):
    """The check `toolturn-eval` runs first (main), in-process: exit 2 and one line before anything runs."""
    with pytest.raises(SystemExit) as stop:
        precheck([*knob.split(), "logger=none", "out_dir=/nonexistent/x"], "evaluate", validate, ADDABLE_KEYS)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err


def test_held_out_tasks_pass_over_training_tasks(tmp_path):
    """A draw that holds a training task is passed over (same exclusions: same tasks); a task file that still
    holds one (written elsewhere or by hand) is a one-line error, by content or by id."""
    from toolturn.evaluate.tasks import EvalItem, check_disjoint, training_tasks

    plain = tmp_path / "plain"
    evaluate(eval_cfg("checkpoints=[do_nothing]", "n=1", "num_tasks=4", f"out_dir={plain}"))
    items = [json.loads(line) for line in (plain / "tasks.jsonl").read_text().splitlines()]
    task = items[0]["tasks"][0]
    run = tmp_path / "train-run"
    (run / "shards").mkdir(parents=True)
    record = {"id": "x", "messages": [], "tools": [], "meta": {"tasks": [{"id": "retail-s0-d0-t0", "gold": task}]}}
    (run / "shards" / "part-0-0.jsonl").write_text(json.dumps(record) + "\n")

    held_out = []
    for name in ("a", "b"):
        evaluate(eval_cfg("checkpoints=[do_nothing]", "n=1", "num_tasks=4", f"out_dir={tmp_path / name}",
                          f"train_data=[{run}]"))
        held_out.append([json.loads(line) for line in (tmp_path / name / "tasks.jsonl").read_text().splitlines()])
    assert held_out[0] == held_out[1]
    drawn = [t for item in held_out[0] for t in item["tasks"]]
    assert task not in drawn and len(held_out[0]) == 4
    assert held_out[0][1:] == items[1:]  # only the item that held the training task was drawn again

    with pytest.raises(ToolturnError, match="same plan and facts as a training task"):
        check_disjoint([EvalItem.from_dict(i) for i in items], training_tasks([str(run)]))
    # the same id under another plan: caught by id
    record["meta"]["tasks"] = [{"id": task["id"], "gold": {**task, "facts": {"other": 1}}}]
    (run / "shards" / "part-0-0.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ToolturnError, match="is also a training task id"):
        check_disjoint([EvalItem.from_dict(i) for i in items], training_tasks([str(run)]))


def _external(server: MockServer, out: Path, *extra: str):
    return eval_cfg("endpoint=external", f"endpoint.base_url={server.base_url}", "endpoint.model=mock",
                    "endpoint.max_retries=1", "checkpoints=[base]", "n=2", "num_tasks=2", "infra_retries=1",
                    "user.max_stall_turns=1", f"out_dir={out}", *extra)


def test_the_tool_fallback_is_generations_default_offer():
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        generation = compose("generate", overrides=["progress=false"])
    assert eval_cfg().eval.tools_fallback == generation.tools_per_dialogue
    assert eval_cfg().eval.tools_per_episode == "auto"


def test_a_label_that_comes_to_mean_another_served_model_is_refused(tmp_path):
    out = tmp_path / "ev"
    with MockServer(lambda request: completion("Sorry, I cannot help.")) as server:
        m = evaluate(_external(server, out, "endpoint.model=model-a"))
        assert m["checkpoints"]["base"]["identity"] | {"files": None} == {
            "label": "base", "kind": "endpoint", "model": "model-a", "base_url": server.base_url, "path": None,
            "sha256": None, "files": None, "base_model": None}
        assert f"- base: endpoint model-a at {server.base_url}" in (out / "report.md").read_text()
        before = rows(out)
        with pytest.raises(ToolturnError, match=r"^checkpoint base in .* was endpoint model-a at .* and is now "
                                                r"endpoint model-b at .*; its samples there are the other model's"):
            evaluate(_external(server, out, "endpoint.model=model-b"))
        assert rows(out) == before  # nothing of model-b was written or counted as model-a's
        evaluate(_external(server, tmp_path / "other", "endpoint.model=model-b"))  # elsewhere it runs
    with MockServer(lambda request: completion("Sorry, I cannot help.")) as moved:
        evaluate(_external(moved, out, "endpoint.model=model-a"))  # the same model, restarted elsewhere, resumes
    assert json.loads((out / "identities.json").read_text())["base"]["base_url"] == moved.base_url


def model_dir(path: Path, weights: bytes, tools: int | None) -> Path:
    """A checkpoint dir as training leaves it: config, weights and (trained by us) its lineage file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "tiny"}')
    (path / "model.safetensors").write_bytes(weights)
    if tools is not None:
        (path / "toolturn_lineage.json").write_text(json.dumps({"tools_per_dialogue": tools}))
    return path


def test_a_trained_checkpoint_gets_its_training_tool_offer_and_is_known_by_its_content(tmp_path):
    ckpt = model_dir(tmp_path / "train" / "merged", b"weights one", tools=6)
    out = tmp_path / "ev"
    with MockServer(lambda request: completion("Sorry, I cannot help.")) as server:
        def cfg(*extra):
            return _external(server, out, f"checkpoints=[{ckpt}]", "n=1", "logger=wandb", *extra)

        m = evaluate(cfg())
        sent = [r for r in server.requests if r.get("tools")]
        assert sent and all(len(r["tools"]) == 6 for r in sent)  # what the model saw
        assert all(len(json.loads(line)["tools"]) == 6 for line in (out / "tasks.jsonl").read_text().splitlines())
        assert m["tool_offer"] == {"tools": 6, "source": "lineage", "trained_with": {str(ckpt): 6}}
        identity = m["checkpoints"][str(ckpt)]["identity"]
        content = model_identity(ckpt)
        assert identity["kind"] == "model" and identity["sha256"] == content["sha256"]
        assert identity["path"] == str(ckpt) and identity["base_url"] == server.base_url
        # the W&B run declares the model as its input: the manifest training logs as its output, byte for byte
        manifest = out / ".lineage" / f"{artifact_name('model', identity_manifest(content))}.json"
        assert manifest.read_text() == canonical(identity_manifest(content))
        assert "Tool offer: 6 (from the checkpoints' lineage" in (out / "report.md").read_text()
        # retrained into the same dir: the label now means other weights
        model_dir(ckpt, b"weights two, longer", tools=6)
        with pytest.raises(ToolturnError, match=rf"checkpoint {ckpt} in .* \(sha256 {short(content['sha256'])}\) and "
                                                rf"is now .* \(sha256 {short(model_identity(ckpt)['sha256'])}\)"):
            evaluate(cfg())
        # an explicit offer overrides the lineage, and the report says so
        m = evaluate(cfg("eval.tools_per_episode=4", f"out_dir={tmp_path / 'four'}"))
    assert m["tool_offer"] == {"tools": 4, "source": "eval.tools_per_episode", "trained_with": {str(ckpt): 6}}
    assert (f"Tool offer: 4 (set by eval.tools_per_episode; checkpoint {ckpt} was trained with 6)"
            in (tmp_path / "four" / "report.md").read_text())


def test_a_served_dir_and_a_lora_are_known_by_content_a_hub_id_by_name(tmp_path):
    base, adapter = model_dir(tmp_path / "base", b"base", tools=None), tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    served = identity("base", EndpointConfig(server="transformers", model=str(base)))
    assert served["kind"] == "model" and served["sha256"] == model_identity(base)["sha256"]
    lora = identity(str(adapter), EndpointConfig(server="vllm", model=str(base), lora=str(adapter)))
    assert lora["kind"] == "adapter" and lora["sha256"] == model_identity(adapter)["sha256"]
    assert lora["base_model"] == {"model": str(base), "path": str(base), "sha256": served["sha256"]}
    hub = identity("base", EndpointConfig(server="vllm", model="Qwen/Qwen3-4B"))
    assert (hub["kind"], hub["model"], hub["sha256"], hub["files"]) == ("model", "Qwen/Qwen3-4B", None, {})


def test_checkpoints_trained_on_different_tool_offers_need_an_explicit_one(tmp_path):
    a = model_dir(tmp_path / "a", b"a", tools=4)
    b = model_dir(tmp_path / "b", b"b", tools=12)
    cfg = eval_cfg("endpoint=external", "endpoint.base_url=http://127.0.0.1:9/v1", "endpoint.model=m",
                   f"checkpoints=[{a},{b}]", f"out_dir={tmp_path / 'ev'}")
    with pytest.raises(ToolturnError, match=rf"different tool offers \(tools_per_dialogue: {a} 4, {b} 12\); set "
                                            r"eval.tools_per_episode"):
        evaluate(cfg)
    (b / "toolturn_lineage.json").write_text("[12]")
    with pytest.raises(ToolturnError, match=rf"checkpoint {b}: .*toolturn_lineage.json is not a readable JSON object"):
        evaluate(cfg)


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


def test_sigint_mid_run_keeps_every_finished_episode_and_ends_with_one_line(tmp_path):
    """Ctrl-C while episodes wait on the model (eval=sql_tau, the in-process suite): every finished sample stays in
    samples.jsonl, the app ends with one line naming what was saved (exit 130), and the same command resumes."""
    import asyncio
    import signal
    import threading

    out, held, release = tmp_path / "ev", threading.Event(), threading.Event()

    def written() -> int:
        return len((out / "samples.jsonl").read_text().splitlines()) if (out / "samples.jsonl").exists() else 0

    async def handler(request: dict):
        if request.get("tools") and written() >= 2:  # the model's requests, once two samples are rows
            held.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 120)
        return completion("Sorry, I cannot help.")

    with MockServer(handler) as server:
        args = [sys.executable, "-m", "toolturn.evaluate.run", "endpoint=external", f"endpoint.base_url={server.base_url}",
                "endpoint.model=mock", "checkpoints=[base]", "n=2", "num_tasks=4", "user.max_stall_turns=1",
                "concurrency=1", "logger=none", "progress=false", f"out_dir={out}"]
        app = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert held.wait(120), "no model request came after two samples were written"
            before = (out / "samples.jsonl").read_text()
            app.send_signal(signal.SIGINT)
            _, err = app.communicate(timeout=60)
        finally:
            release.set()
            if app.poll() is None:
                app.kill()
        assert app.returncode == 130 and "Traceback" not in err, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"interrupted (SIGINT): {len(before.splitlines())} finished "
                                                       f"samples are saved in {out / 'samples.jsonl'};"), err
        assert "run the same command again to resume" in lines[0]
        assert (out / "samples.jsonl").read_text() == before  # the episode in flight left nothing half-written
        resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    kept = before.splitlines()
    assert len(rows(out)) == 4 * 2 + 4 and kept == (out / "samples.jsonl").read_text().splitlines()[:len(kept)]
