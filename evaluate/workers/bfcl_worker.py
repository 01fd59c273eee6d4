"""BFCL through the official `bfcl-eval` package, run by the bfcl venv's python (`python -I bfcl_worker.py
MODE IN.json`): stdlib + bfcl_eval only, never imported by toolturn. Modes:

- describe: check the registry key, load the entries of the categories (BFCL's own loader), select ids.
- run:      for each sample, BFCL's own handler loop (single-turn, or multi-turn with live execution of the
            backends), then BFCL's own per-entry checker; one JSON line per sample on stdout. Each sample's
            output is also written where `bfcl generate` writes it (its handler's `write`), under
            `result_dir/sample-<index>/`, so `bfcl evaluate --result-dir` re-scores it; the files are compacted
            (an entry once, sorted) at the end of each run. On SIGTERM every sample in flight is reported as
            `{..., "interrupted": {"responses", "requests"}}` (the model's outputs so far) and the worker exits.
- score:    the same checker on given raw outputs (no model): the tests' evidence that it scores known
            answers as BFCL does.
- leaderboard: BFCL's own aggregation (generate_leaderboard_csv) of per-category accuracies; returns
            its data_overall.csv and data_live.csv rows.
- serve:    the jobs of one evaluation in turn, from stdin (evaluate/worker_process.Session).

Every print of bfcl goes to stderr (fd 1 is re-pointed at fd 2); results go to the original stdout, one
line each, so the harness writes a row as soon as a sample is scored.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import types
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # bfcl prints progress on stdout: keep our result stream clean
sys.stdout = sys.stderr
LOCK = threading.Lock()


def emit(obj: dict, timeout_s: float = -1) -> None:
    line = json.dumps(obj, default=str) + "\n"
    if not LOCK.acquire(timeout=timeout_s):
        return  # stopping, and another thread holds the channel: its line is what gets out
    try:
        OUT.write(line)
        OUT.flush()
    finally:
        LOCK.release()


class InFlight:
    """The samples being run, each with the model's raw outputs so far (appended by the query method)."""

    def __init__(self):
        self.lock, self.samples = threading.Lock(), {}

    def start(self, sample: dict) -> list:
        responses: list = []
        with self.lock:
            self.samples[(sample["id"], sample["index"])] = (sample, responses)
        return responses

    def end(self, sample: dict) -> None:
        with self.lock:
            self.samples.pop((sample["id"], sample["index"]), None)

    def report(self) -> None:
        """One `interrupted` line per sample in flight."""
        with self.lock:
            running = list(self.samples.values())
        for sample, responses in running:
            emit({**sample, "interrupted": {"responses": list(responses), "requests": len(responses)}}, timeout_s=5)


IN_FLIGHT = InFlight()


def stop(signum, frame) -> None:
    """SIGTERM: report the samples in flight, then exit at once (their threads wait on HTTP nobody needs)."""
    IN_FLIGHT.report()
    OUT.flush()
    os._exit(0)


def bfcl_imports():
    # Importing bfcl_eval.constants.eval_config creates result/, score/ and .file_locks/ under
    # BFCL_PROJECT_ROOT (site-packages when unset): the harness always sets it to a dir of the run.
    if not os.environ.get("BFCL_PROJECT_ROOT"):
        raise SystemExit("BFCL_PROJECT_ROOT is not set")
    from bfcl_eval import utils
    from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING
    from bfcl_eval.eval_checker import eval_runner
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.model_handler.local_inference.base_oss_handler import OSSHandler
    return types.SimpleNamespace(models=MODEL_CONFIG_MAPPING, runner=eval_runner, mt=multi_turn_utils,
                                 OSSHandler=OSSHandler, utils=utils)


def key_problem(b, key: str) -> str | None:
    """Why `key` cannot be the --model of a local checkpoint (None when it can)."""
    if key not in b.models:
        qwen = sorted(k for k in b.models if k.startswith("Qwen/Qwen3"))
        return f"eval.model_key {key!r} is not in BFCL's model registry (e.g. {', '.join(qwen[:6])})"
    if not issubclass(b.models[key].model_handler, b.OSSHandler):
        return (f"eval.model_key {key!r} is an API model of BFCL's registry; a local checkpoint needs a local-model "
                f"key (its handler writes the chat template), e.g. Qwen/Qwen3-8B-FC")
    # BFCL's runner names results by key with / -> _ and maps back with _ -> / (ast_checker looks it up).
    if key.replace("/", "_").replace("_", "/") != key:
        return f"eval.model_key {key!r} has an underscore: BFCL's runner cannot map its result dir back to it"
    return None


# ------------------------------------------------------------------------------------------------ describe

def describe(b, cfg: dict) -> dict:
    problem = key_problem(b, cfg["model_key"])
    if problem:
        return {"error": problem}
    wanted = set(cfg.get("ids") or [])
    limit = cfg.get("limit_per_category")
    entries, cats = [], cfg["categories"]
    if wanted:  # only the categories the ids belong to are loaded (live_multiple alone is 3.9 MB)
        named = {b.utils.extract_test_category_from_id(i) for i in wanted if re.fullmatch(r"[a-z_]+_\d+(-\d+)*", i)}
        cats = [c for c in cats if c in named]
    prompt_chars = 0
    for cat in cats:
        loaded = b.utils.load_dataset_entry(cat)
        chosen = [e for e in loaded if not wanted or e["id"] in wanted][:limit or None]
        entries += [{"id": e["id"], "category": cat, "turns": len(e["question"])} for e in chosen]
        # what a request carries: the functions and the questions (BFCL's template adds a few hundred characters)
        prompt_chars = max([prompt_chars] + [len(json.dumps(e["function"])) + len(json.dumps(e["question"]))
                                             for e in chosen])
    unknown = sorted(wanted - {e["id"] for e in entries})
    if unknown:
        return {"error": f"eval.ids names entries that the selected categories {cfg['categories']} do not have: "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}"}
    return {"entries": entries, "prompt_chars": prompt_chars}


# ------------------------------------------------------------------------------------------------ scoring

class Data:
    """Entries as generation sees them (with language hints) and as the checker sees them (without), and
    the ground truth, index-aligned by BFCL's loaders; loaded once per category."""

    def __init__(self, b):
        self.b, self.cache, self.lock = b, {}, threading.Lock()

    def category(self, cat: str) -> dict:
        with self.lock:
            if cat not in self.cache:
                u = self.b.utils
                prompt = u.load_dataset_entry(cat)
                plain = u.load_dataset_entry(cat, include_prereq=False, include_language_specific_hint=False)
                truth = [] if u.is_relevance_or_irrelevance(cat) else u.load_ground_truth_entry(cat)
                self.cache[cat] = {e["id"]: (e, plain[i], truth[i] if truth else None) for i, e in enumerate(prompt)}
            return self.cache[cat]


def namespace(index: int, seed: int) -> str:
    """The multi-turn backends are cached per process in multi_turn_utils' globals under
    `{model_name}_{entry id}_{Class}_instance` (`..._eval_...` while checking, `..._ground_truth_eval_...` for the
    answer): a second sample of an entry under the same name would continue the first one's file system,
    and re-checking after a wrong answer would compare against a polluted state. So each sample runs and
    is checked under its own name, and its instances are deleted once it is scored."""
    return f"toolturn_s{index}_{seed}"


def drop_instances(b, ns: str) -> int:
    prefix = re.sub(r"[-./:]", "_", ns) + "_"
    names = [k for k in list(vars(b.mt)) if k.startswith(prefix) and k.endswith("_instance")]
    for k in names:
        vars(b.mt).pop(k, None)
    return len(names)


def made_call(b, handler, cat: str, result) -> bool:
    """Whether the output holds a decodable, non-empty function call (BFCL's own decoders)."""
    if b.utils.is_multi_turn(cat):
        steps = [step for turn in result if isinstance(turn, list) for step in turn] if isinstance(result, list) else []
        return any(_decoded(lambda s=step: handler.decode_execute(s, has_tool_call_tag=False),
                            b.mt.is_empty_execute_response) for step in steps)
    return _decoded(lambda: handler.decode_ast(result, _return_format(b, cat), False), b.utils.is_empty_output)


def _decoded(decode, is_empty) -> bool:
    try:
        return not is_empty(decode())
    except Exception:  # noqa: BLE001 - an undecodable output holds no call
        return False


def _return_format(b, cat: str):
    from bfcl_eval.constants.enums import ReturnFormat
    if b.utils.is_java(cat):
        return ReturnFormat.JAVA
    if b.utils.is_js(cat):
        return ReturnFormat.JAVASCRIPT
    return ReturnFormat.PYTHON


def check(b, handler, key: str, data: Data, entry_id: str, cat: str, result, ns: str) -> dict:
    """BFCL's per-entry checker, dispatched as eval_runner.evaluate_task does (the file runners call these
    same functions per entry). Returns the checker's own verdict dict ({"valid": True} or its failure)."""
    from bfcl_eval.constants.enums import Language
    r, u = b.runner, b.utils
    _, prompt, truth = data.category(cat)[entry_id]
    prompt = copy.deepcopy(prompt)
    dir_name = key.replace("/", "_")  # what the runner passes as model_name (the result dir's name)
    if u.is_relevance_or_irrelevance(cat):
        # irrelevance/live_irrelevance: correct when NO call decodes; live_relevance: correct when one DOES
        # (any call: there is no answer file). BFCL's relevance runner decides both.
        return r._evaluate_single_relevance_entry(handler, entry_id, result, prompt, dir_name, cat)
    if u.is_multi_turn(cat):
        try:
            # the checker's model_name only names cached instances: the sample's own namespace
            return r._evaluate_single_multi_turn_entry(handler, entry_id, result, truth["ground_truth"], prompt,
                                                       ns, cat)
        finally:
            drop_instances(b, ns)
    language = Language.JAVA if u.is_java(cat) else Language.JAVASCRIPT if u.is_js(cat) else Language.PYTHON
    return r._evaluate_single_ast_entry(handler, entry_id, result, truth["ground_truth"], prompt, dir_name, cat,
                                        language=language, return_format=_return_format(b, cat),
                                        has_tool_call_tag=False)


def verdict_row(b, handler, verdict: dict, cat: str, result) -> dict:
    valid = bool(verdict.get("valid"))
    error = verdict.get("error")
    if isinstance(error, dict):  # multi-turn: {"error_message", "error_type", "details"}
        error_type, message = error.get("error_type"), error.get("error_message")
    else:
        error_type, message = verdict.get("error_type"), error
    return {"valid": valid, "error_type": None if valid else (error_type or "invalid"),
            "error": None if valid else json.dumps(message, default=str)[:2000],
            "made_call": made_call(b, handler, cat, result)}


def base_handler(b, key: str):
    config = b.models[key]
    return config.model_handler(model_name=config.model_name, temperature=0, registry_name=key,
                                is_fc_model=config.is_fc_model)


def score(b, cfg: dict) -> None:
    """Check given raw outputs: [{id, result, ns?}] in order (the same ns twice re-checks in one process)."""
    key = cfg["model_key"]
    handler, data = base_handler(b, key), Data(b)
    for item in cfg["outputs"]:
        cat = b.utils.extract_test_category_from_id(item["id"])
        verdict = check(b, handler, key, data, item["id"], cat, item["result"], item.get("ns", "toolturn_score"))
        left = [k for k in vars(b.mt) if k.endswith("_instance")]
        emit({"id": item["id"], **verdict_row(b, handler, verdict, cat, item["result"]), "cached_instances": len(left)})


# ------------------------------------------------------------------------------------------------ inference

INFRA = ("APIConnectionError", "APITimeoutError", "InternalServerError", "RateLimitError", "ConnectionError",
         "Timeout", "ReadTimeout", "ConnectTimeout")


class InfraFailure(Exception):
    pass


def sampled_handler_class(base_cls, cfg: dict):
    """The registry's handler class with one method replaced: the Completions query, so that every request
    carries our sampling (temperature, top_p, max_tokens, a seed per sample; for `transformers serve` the
    generation_config that switches sampling on, else it decodes greedily) and goes to our endpoint under its
    served name. BFCL's prompt (the handler's _format_prompt), its context-length cap and its parsing are kept."""
    s = cfg["sampling"]
    transformers = cfg["server"] == "transformers"

    def _query_prompting(self, inference_data: dict):
        prompt = self._format_prompt(inference_data["message"], inference_data["function"])
        inference_data["inference_input_log"] = {"formatted_prompt": prompt}
        if cfg["kind"] == "do_nothing":  # the floor: a model that never calls a function
            reply = types.SimpleNamespace(choices=[types.SimpleNamespace(text=cfg["do_nothing_reply"])],
                                          usage=types.SimpleNamespace(prompt_tokens=0, completion_tokens=0))
            return reply, 0.0
        used = len(self.tokenizer.tokenize(prompt))
        # BFCL's cap (min(4096, context - prompt - 2)), then ours
        left = 1000 if self.max_context_length < used + 2 else min(4096, self.max_context_length - used - 2)
        extra = {k: getattr(self, k) for k in ("stop_token_ids", "skip_special_tokens") if hasattr(self, k)}
        if transformers:
            extra = {"generation_config": s["generation_config"]}  # it refuses unknown fields (HTTP 422)
        start = time.time()
        try:
            response = self.client.completions.create(
                model=cfg["served_model"], prompt=prompt, temperature=s["temperature"], top_p=s["top_p"],
                max_tokens=min(left, s["max_tokens"]), seed=self.toolturn_seed, extra_body=extra or None,
                timeout=cfg["timeout_s"])
        except Exception as exc:  # noqa: BLE001 - sorted into infrastructure or model failures below
            if type(exc).__name__ in INFRA:
                raise InfraFailure(f"{type(exc).__name__}: {exc}") from exc
            raise
        self.toolturn_responses.append(response.choices[0].text)  # what an interrupted sample reports
        return response, time.time() - start

    # the registry's handlers use overrides.EnforceOverrides: a replaced method must say so (the @override
    # decorator cannot find the base class of a class made in a function)
    _query_prompting.__override__ = True
    return type(f"Sampled{base_cls.__name__}", (base_cls,), {"_query_prompting": _query_prompting})


def endpoint_down(cfg: dict) -> str | None:
    # spin_up_local_server(skip_server_setup=True) polls {base_url}/models forever while the server is
    # down: ask once, with a timeout, first.
    req = urllib.request.Request(cfg["base_url"].rstrip("/") + "/models",
                                 headers={"Authorization": f"Bearer {cfg['api_key']}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return None if resp.status == 200 else f"GET /models answered {resp.status}"
    except Exception as exc:  # noqa: BLE001 - any failure means the endpoint cannot be used
        return f"endpoint {cfg['base_url']} unreachable: {exc}"


def messages_of(question, result, log) -> list[dict]:
    """A readable transcript: the user turns, each assistant step and each tool result."""
    if not isinstance(log, list):  # single-turn
        return [*question[0], {"role": "assistant", "content": result}]
    out, turns = [], [t for t in log if isinstance(t, dict)]
    for turn in turns:
        out += turn.get("begin_of_turn_query") or []
        for name, step in turn.items():
            if name.startswith("step_"):
                out += [{"role": m["role"], "content": m.get("content")} for m in step
                        if m.get("role") in ("assistant", "tool")]
    return out


def run(b, cfg: dict) -> None:
    key, kind = cfg["model_key"], cfg["kind"]
    samples = cfg["samples"]
    if kind == "model":
        down = endpoint_down(cfg)
        if down:
            for s in samples:
                emit({**s, "infra_error": "endpoint_down", "infra_detail": down})
            return
        # OSSHandler reads its endpoint from these (the official way to point BFCL at a running server)
        os.environ["REMOTE_OPENAI_BASE_URL"] = cfg["base_url"]
        os.environ["REMOTE_OPENAI_API_KEY"] = cfg["api_key"]
    config = b.models[key]
    handler = sampled_handler_class(config.model_handler, cfg)(
        model_name=config.model_name, temperature=cfg["sampling"]["temperature"], registry_name=key,
        is_fc_model=config.is_fc_model)
    if kind == "model":
        # --model is a registry key (it picks the handler and chat template) and --local-model-path the
        # checkpoint (config.json + tokenizer_config.json: the tokenizer counts prompt tokens, the config gives
        # the context length); skip_server_setup: the harness serves the model.
        handler.client = handler.client.with_options(max_retries=cfg["max_retries"])
        handler.spin_up_local_server(num_gpus=1, gpu_memory_utilization=0.9, backend="vllm", skip_server_setup=True,
                                     local_model_path=cfg["model_path"])
    data = Data(b)
    check_lock, write_lock = threading.Lock(), threading.Lock()
    result_dirs = {Path(cfg["result_dir"]) / f"sample-{s['index']}" for s in samples}

    def one(s: dict) -> None:
        cat = b.utils.extract_test_category_from_id(s["id"])
        entry = copy.deepcopy(data.category(cat)[s["id"]][0])  # inference edits the entry (prompts, functions)
        h = copy.copy(handler)
        ns = namespace(s["index"], s["seed"])
        h.toolturn_seed = s["seed"]
        h.toolturn_responses = IN_FLIGHT.start(s)
        h.model_name_underline_replaced = ns  # the name multi-turn inference caches its live backends under
        t0 = time.time()
        try:
            result, meta = h.inference(entry, False, True)  # include_input_log, exclude_state_log
        except InfraFailure as exc:
            drop_instances(b, ns)
            emit({**s, "infra_error": "endpoint_error", "infra_detail": str(exc)[:500]})
            IN_FLIGHT.end(s)
            return
        except Exception as exc:  # noqa: BLE001 - as BFCL's generation does: the error text is the result
            result, meta = f"Error during inference: {exc}", {"traceback": traceback.format_exc(limit=5)}
        drop_instances(b, ns)
        with write_lock:  # BFCL's own result file, as `bfcl generate` writes it (appended; compacted below)
            h.write({"id": s["id"], "result": result, **meta}, Path(cfg["result_dir"]) / f"sample-{s['index']}")
        with check_lock:
            verdict = check(b, h, key, data, s["id"], cat, result, ns)
        row = verdict_row(b, h, verdict, cat, result)
        emit({**s, "category": cat, **row, "infra_error": None, "result": result,
              "digest": hashlib.sha256(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()[:16],
              "messages": messages_of(data.category(cat)[s["id"]][0]["question"], result, meta.get("inference_log")),
              "input_tokens": meta.get("input_token_count"), "output_tokens": meta.get("output_token_count"),
              "latency_s": round(time.time() - t0, 3), "inference_error": meta.get("traceback")})
        IN_FLIGHT.end(s)

    with ThreadPoolExecutor(max_workers=max(1, int(cfg["threads"]))) as pool:
        for f in [pool.submit(one, s) for s in samples]:
            f.result()
    for d in result_dirs:
        compact(b, d)


def compact(b, result_dir: Path) -> None:
    """Each result file under `result_dir` with every entry once (the latest: a re-run sample replaces the one
    before) in BFCL's order, as `bfcl generate` leaves its files; a line torn by a kill is dropped."""
    for path in result_dir.rglob("*_result.json"):
        latest = {}
        for raw in path.read_text().splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            latest[entry["id"]] = entry
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in sorted(latest.values(), key=b.utils.sort_key)))
        os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ leaderboard

def leaderboard(b, cfg: dict) -> dict:
    """BFCL's own aggregation: missing categories count 0 in the overall (shown as N/A in its columns)."""
    from bfcl_eval.eval_checker.eval_runner_helper import generate_leaderboard_csv

    out = {}
    root = Path(cfg["score_dir"])
    dir_name = cfg["model_key"].replace("/", "_")
    for i, (label, table) in enumerate(cfg["tables"].items()):
        where = root / f"c{i}"
        where.mkdir(parents=True, exist_ok=True)
        generate_leaderboard_csv({dir_name: copy.deepcopy(table)}, where)
        out[label] = {}
        for name in ("overall", "live", "non_live", "multi_turn"):
            with open(where / f"data_{name}.csv", newline="") as f:
                out[label][name] = next(csv.DictReader(f))
    return out


def handle(b, mode: str, cfg: dict) -> None:
    if mode == "describe":
        emit(describe(b, cfg))
    elif mode == "run":
        run(b, cfg)
    elif mode == "score":
        score(b, cfg)
    elif mode == "leaderboard":
        emit(leaderboard(b, cfg))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def main() -> None:
    """`MODE JOB.json` runs one job; `serve` answers {"mode", "job"} lines from stdin in turn, each followed by
    {"end": true}, so that BFCL's imports (~5 s, its model registry) are paid once per evaluation."""
    b = bfcl_imports()
    signal.signal(signal.SIGTERM, stop)
    if sys.argv[1] != "serve":
        handle(b, sys.argv[1], json.loads(Path(sys.argv[2]).read_text()))
        return
    for line in sys.stdin:
        job = json.loads(line)
        handle(b, job["mode"], json.loads(Path(job["job"]).read_text()))
        emit({"end": True})


if __name__ == "__main__":
    main()
