"""`eval=bfcl`: the Berkeley Function Calling Leaderboard (V4) through the official `bfcl-eval` package.

    toolturn-eval eval=bfcl eval.categories=[simple,multiple,multi_turn_base] checkpoints=[base,PATH]

BFCL's shipped data, its handler loop (multi-turn with live execution of its backends) and its checkers
run unmodified in their own venv (`core/envs/bfcl.txt`), driven by `evaluate/workers/bfcl_worker.py`; the
model under test is queried through our endpoint with our sampling and a seed per sample. Each sample is
one row (reward 1 when BFCL's checker says valid); per-category accuracy, BFCL's overall weighting (by
BFCL's own aggregation code) and the paper's Table-2 columns are added to metrics.json and report.md,
beside the do-nothing floor. docs/bfcl.md has the traps this handles.

Before a checkpoint's samples run its endpoint is measured (`evaluate/pacing.py`): the entries in flight never
exceed what the server serves at once, each request may take TIMEOUT_FACTOR probe latencies, and a line on stderr
says up front how long the samples take at least. BFCL's own result files are kept under `bfcl/result/`, one dir
per checkpoint and sample, so that `bfcl evaluate` re-scores them; an interrupted run keeps the outputs so far of
the entries in flight as `interrupted` rows (run again on resume).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from toolturn.core.checks import Check, integer, maybe
from toolturn.core.endpoints import EndpointConfig, Endpoints, resolve_model
from toolturn.core.errors import ToolturnError
from toolturn.core.isolated_env import ensure_env
from toolturn.evaluate.checkpoints import request_sampling
from toolturn.evaluate.metrics import summarise
from toolturn.evaluate.pacing import Pace, duration, measure
from toolturn.evaluate.report import DO_NOTHING
from toolturn.evaluate.runner import Checkpoint
from toolturn.evaluate.suites import Sample, register
from toolturn.evaluate.worker_process import Session, Worker, file_label

WORKER = Path(__file__).parent / "workers" / "bfcl_worker.py"
PACKAGE = "bfcl-eval 2026.3.23"

NON_LIVE = ["simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple"]
LIVE = ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]
MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]
HALLUCINATION = ["live_relevance", "irrelevance", "live_irrelevance"]
CATEGORIES = NON_LIVE + LIVE + MULTI_TURN + HALLUCINATION  # the paper's Table-2 columns, all offline
GROUPS = {"all": CATEGORIES, "simple": ["simple_python"], "non_live": NON_LIVE + ["irrelevance"],
          "live": LIVE + ["live_irrelevance", "live_relevance"], "multi_turn": MULTI_TURN,
          "relevance": ["live_relevance"], "hallucination": HALLUCINATION}
ONLINE = {"web_search": "SerpAPI web search and live HTTP", "web_search_base": "SerpAPI web search and live HTTP",
          "web_search_no_snippet": "SerpAPI web search and live HTTP", "agentic": "web search and memory",
          "memory": "a sentence-transformers model from the HF hub (memory_vector)",
          "memory_kv": "BFCL's memory prerequisites", "memory_vector": "a sentence-transformers model from the HF hub",
          "memory_rec_sum": "BFCL's memory prerequisites"}
DO_NOTHING_REPLY = "I will not call any function."
PARTS = ("made_call", "valid")
STOP_TIMEOUT_S = 10  # an interrupted worker's report of the entries in flight


def expand(names: list) -> list[str]:
    """Category names and groups -> BFCL categories, in order, once each; a bad name is one line."""
    out: list[str] = []
    for name in map(str, names):
        if name in ONLINE:
            raise ToolturnError(f"BFCL category {name!r} needs the internet ({ONLINE[name]}); it is not run here "
                                f"(BFCL's overall counts the Agentic part as 0)")
        if name == "format_sensitivity":
            raise ToolturnError("BFCL's format_sensitivity is not scored and is skipped for FC keys; it is not run")
        if name not in CATEGORIES and name not in GROUPS:
            raise ToolturnError(f"unknown BFCL category {name!r}; choose from {CATEGORIES} or the groups {sorted(GROUPS)}")
        out += [c for c in GROUPS.get(name, [name]) if c not in out]
    if not out:
        raise ToolturnError("eval.categories is empty")
    return out


def _categories_ok(value) -> bool:
    if not isinstance(value, list):
        return False
    expand(value)  # raises the precise one-line reason (unknown, needs the internet, ...)
    return True


def _names(value) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) and v for v in value))


@dataclass(frozen=True)
class BfclItem:
    id: str
    category: str
    turns: int  # user turns: a request each at least


@register("bfcl")
class BfclSuite:
    SAMPLE_SETTINGS = ("n", "seed", "sampling", "eval")  # no domain/user group: those are sql_tau's
    CHECKS = {"eval.categories": Check("a list of BFCL categories or groups", _categories_ok),
              "eval.ids": maybe(Check("a list of BFCL entry ids (or null)", _names)),
              "eval.limit_per_category": maybe(Check("a positive integer or null",
                                                     lambda v: v is None or integer(1).ok(v))),
              "eval.threads": integer(1)}
    parts = PARTS
    checker = "BFCL's checker"

    def __init__(self, cfg, out_dir: Path, checkpoints: list[Checkpoint]):
        e = cfg.eval
        self.cfg, self.out_dir = cfg, out_dir
        self.name, self.domain_name = str(e.name), "bfcl_v4"
        self.user_name = f"none (BFCL's own user turns; {PACKAGE})"
        self.tasks_are = "BFCL entries"
        self.key = str(e.model_key)
        self.n = int(cfg.n)
        self.categories = expand(list(e.categories))
        if any(c.kind == "oracle" for c in checkpoints):
            raise ToolturnError("eval=bfcl has no oracle checkpoint (BFCL's answers are checked by its own checkers)")
        for c in checkpoints:
            if c.endpoint is not None:
                c.endpoint.check_one_url(f"checkpoint {c.name}'s endpoint", "bfcl-eval")
        # BFCL_PROJECT_ROOT: bfcl creates result/, score/ and .file_locks/ there at import (site-packages if unset)
        self.root = out_dir / "bfcl"
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker = Worker(ensure_env("bfcl"), WORKER, env={
            "BFCL_PROJECT_ROOT": str(self.root), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error"})  # (-I ignores PYTHON* variables; the worker flushes each line)
        # one worker for the whole evaluation: describe, a run per checkpoint, the leaderboard
        self.session = Session(self.worker, out_dir / "logs" / "bfcl-worker.log")
        self.model_paths = {c.name: self._model_path(c.endpoint) for c in checkpoints if c.kind == "model"}
        ids = [str(i) for i in e.ids] if e.get("ids") else None
        got = self._call("describe", {"model_key": self.key, "categories": self.categories, "ids": ids,
                                      "limit_per_category": e.get("limit_per_category")})
        self.items = [BfclItem(x["id"], x["category"], int(x["turns"])) for x in got.get("entries") or []]
        self.prompt_chars = int(got.get("prompt_chars") or 0)  # the longest entry's functions and questions
        self.pace: dict[str, dict] = {}  # by checkpoint: what was measured and what it allows
        if not self.items:
            self.session.close()  # the app never gets this suite to close
            raise ToolturnError(got.get("error") or f"no BFCL entries selected (categories {self.categories}, "
                                                     f"ids {ids})")
        self.categories = [c for c in self.categories if any(i.category == c for i in self.items)]
        self.partial = ids is not None or e.get("limit_per_category") is not None

    # -- the worker process

    def _job(self, mode: str, payload: dict, label: str) -> Path:
        jobs = self.root / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        path = jobs / f"{mode}-{file_label(label, 60)}.json"
        path.write_text(json.dumps(payload))
        return path

    def _call(self, mode: str, payload: dict, label: str = "") -> dict:
        """One short job (describe, leaderboard): its single JSON line, or one error line."""
        path = self._job(mode, payload, label or mode)
        return self.session.call(mode, path, what=mode)

    def _model_path(self, spec: EndpointConfig) -> str:
        """The dir BFCL loads the tokenizer and config from (--local-model-path): the served dir, the base
        model of a LoRA, or eval.local_model_path for an external server."""
        if not spec.kind.managed:
            path = self.cfg.eval.get("local_model_path")
            if not path:
                raise ToolturnError("eval=bfcl with endpoint=external needs eval.local_model_path: a dir with the "
                                    "served model's config.json and tokenizer_config.json (BFCL builds the prompt "
                                    "and counts its tokens locally)")
        else:
            path = resolve_model(spec.model)
        missing = [f for f in ("config.json", "tokenizer_config.json") if not (Path(path) / f).exists()]
        if missing:
            raise ToolturnError(f"BFCL needs {' and '.join(missing)} in the model dir {path}")
        return str(Path(path).resolve())

    async def run_batch(self, checkpoint: Checkpoint, todo: list[Sample], write) -> None:
        samples = [{"id": s.item.id, "index": s.index, "seed": s.seed} for s in todo]
        base = {"model_key": self.key, "samples": samples, "do_nothing_reply": DO_NOTHING_REPLY,
                "result_dir": str(self.result_dir(checkpoint.name))}
        if checkpoint.kind == DO_NOTHING:
            return await self._stream(checkpoint, {**base, "kind": DO_NOTHING, "server": "none", "threads": 4,
                                                   "sampling": self._sampling(EndpointConfig(server="none"))}, write)
        spec = checkpoint.endpoint
        with Endpoints({checkpoint.name: spec}, [checkpoint.name], self.out_dir / "logs") as eps:
            live = eps.live[checkpoint.name].endpoint
            pace = await measure(live, spec, request_sampling(self.cfg.sampling, spec), self.prompt_chars,
                                 api="completions")
            threads = min(len(todo), pace.in_flight(int(self.cfg.eval.threads)))
            self._announce(checkpoint.name, todo, threads, pace)
            # BFCL sends model=<local model path>; we send the endpoint's served name, which for the managed
            # transformers server is that path (it is pinned to it and refuses any other name)
            payload = {**base, "kind": "model", "server": spec.server, "base_url": live.base_url,
                       "served_model": live.model, "api_key": live.api_key or "EMPTY",
                       "model_path": self.model_paths[checkpoint.name], "timeout_s": pace.timeout_s,
                       "max_retries": live.max_retries, "sampling": self._sampling(spec), "threads": threads}
            await self._stream(checkpoint, payload, write)

    def result_dir(self, checkpoint: str) -> Path:
        """Where BFCL's own result files of a checkpoint go: `sample-<k>/<model key dir>/<group>/` below it."""
        return self.root / "result" / file_label(checkpoint)

    def _announce(self, name: str, todo: list[Sample], threads: int, pace) -> None:
        """Record the pace of checkpoint `name` and say up front about how long its samples take."""
        requests = sum(s.item.turns for s in todo)  # a request per turn at least (one per single-turn entry)
        about = None if pace.latency_s is None else requests * pace.latency_s / threads
        self.pace[name] = {"samples": len(todo), "at_once": threads, "server": pace.to_dict(),
                           "requests_at_least": requests, "estimate_s": about}
        print(f"BFCL, {name}: {len(todo)} samples, {threads} at once; server: {pace.line()}" +
              ("" if about is None else f". They make at least {requests} requests (a multi-turn entry one per turn, "
                                        f"more when the model calls), about {duration(about)} at that pace"),
              file=sys.stderr, flush=True)

    def _sampling(self, spec: EndpointConfig) -> dict:
        s = request_sampling(self.cfg.sampling, spec)
        return {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                "generation_config": s.generation_config}

    async def _stream(self, checkpoint: Checkpoint, payload: dict, write) -> None:
        """Run the worker; a row per line as it comes; samples it never reported become infra_error rows."""
        path = self._job("run", payload, checkpoint.name)
        log = self.session.log
        pending = {(s["id"], s["index"]): s for s in payload["samples"]}
        async with self.session.stream("run", path) as run:
            try:
                async for out in run:
                    pending.pop((out["id"], out["index"]), None)
                    write(self._row(checkpoint.name, out))
            except asyncio.CancelledError:  # interrupted: what finished meanwhile, then what was in flight
                for out in await run.stop(STOP_TIMEOUT_S):
                    if pending.pop((out["id"], out["index"]), None) is not None:
                        write(self._row(checkpoint.name, out if "infra_error" not in out else
                                        {**out, "interrupted": {"responses": [], "requests": 0}}))
                raise
        if pending:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            for s in pending.values():
                write(self._row(checkpoint.name, {**s, "infra_error": "worker_crashed",
                                                  "infra_detail": f"exit code {run.returncode}: {tail[0][:300]} "
                                                                  f"(log {log})"}))

    def _row(self, checkpoint: str, out: dict) -> dict:
        row = {"checkpoint": checkpoint, "task_id": out["id"], "sample": out["index"], "seed": out["seed"],
               "category": out.get("category") or out["id"].rsplit("_", 1)[0]}
        if "interrupted" in out:
            got = out["interrupted"]
            return {**row, "reward": None, "parts": {}, "termination": "interrupted", "assistant_digest": None,
                    "infra_error": "interrupted", "partial": True, "result": got["responses"], "messages": [],
                    "infra_detail": f"the run was stopped after {got['requests']} model requests of this entry; the "
                                    f"model's outputs so far are in result (it runs again on resume)"}
        if out.get("infra_error"):
            return {**row, "reward": None, "parts": {}, "termination": "infra_error", "assistant_digest": None,
                    "infra_error": out["infra_error"], "infra_detail": out.get("infra_detail"), "messages": []}
        return {**row, "reward": 1.0 if out["valid"] else 0.0,
                "parts": {"made_call": out["made_call"], "valid": out["valid"]},
                "termination": "valid" if out["valid"] else out["error_type"], "infra_error": None,
                "assistant_digest": out["digest"], "error": out["error"], "result": out["result"],
                "messages": out["messages"], "input_tokens": out["input_tokens"],
                "output_tokens": out["output_tokens"], "latency_s": out["latency_s"],
                "inference_error": out.get("inference_error")}

    def close(self) -> None:
        self.session.close()

    # -- metrics and report

    def _category_metrics(self, rows: list[dict], n: int) -> dict:
        out = {}
        for cat in self.categories:
            scored = [r for r in rows if r.get("category") == cat and r.get("infra_error") is None]
            by_entry: dict[str, list[dict]] = defaultdict(list)
            for r in scored:
                by_entry[r["task_id"]].append(r)
            same = {t for t, rs in by_entry.items() if len(rs) > 1 and len({r["assistant_digest"] for r in rs}) == 1}
            counts = {t: (len(rs), sum(r["reward"] == 1.0 for r in rs)) for t, rs in by_entry.items()}
            ks = list(range(1, n + 1))
            # pass@k for k > 1 only from entries whose samples really differ (a greedy server repeats itself)
            differ = summarise({t: c for t, c in counts.items() if t not in same}, ks) if n > 1 else None
            out[cat] = {"entries": sum(i.category == cat for i in self.items), "scored_samples": len(scored),
                        "accuracy": mean(r["reward"] for r in scored) if scored else None,
                        "identical_entries": len(same),
                        "pass_at_k": {k: v for k, v in (differ or {}).get("pass_at_k", {}).items() if k != "1"},
                        "pass_hat_k": {k: v for k, v in (differ or {}).get("pass_hat_k", {}).items() if k != "1"},
                        "entries_in_pass_at_k": differ["tasks_in_curve"] if differ else None}
        return out

    def extra_metrics(self, rows_by_checkpoint: dict[str, list[dict]]) -> dict:
        per = {name: self._category_metrics(rows, 1 if name == DO_NOTHING else self.n)
               for name, rows in rows_by_checkpoint.items()}
        tables = {name: {c: {"accuracy": m["accuracy"], "total_count": m["entries"]} for c, m in cats.items()
                         if m["accuracy"] is not None} for name, cats in per.items()}
        board = self._call("leaderboard", {"model_key": self.key, "tables": tables,
                                           "score_dir": str(self.root / "score")}) if tables else {}
        return {"package": PACKAGE, "model_key": self.key, "categories": self.categories, "partial": self.partial,
                "checkpoints": {name: {"categories": per[name], **_bfcl_scores(board.get(name), set(tables[name]))}
                                for name in per}, "pace": self.pace}

    def native_outputs(self, rows_by_checkpoint: dict[str, list[dict]]) -> list[str]:
        """BFCL's own result dirs, one per checkpoint and sample (written by the worker as samples finish)."""
        return [str(d) for name in rows_by_checkpoint for d in sorted(self.result_dir(name).glob("sample-*"))]

    def rescore_command(self, result_dir: Path) -> str:
        """The `bfcl evaluate` command line that re-scores one result dir with BFCL's own CLI."""
        where = result_dir.relative_to(self.root)
        return (f"BFCL_PROJECT_ROOT={self.root} {self.worker.python.parent / 'bfcl'} evaluate --model {self.key} "
                f"--test-category {','.join(self.categories)} --result-dir {where} "
                f"--score-dir rescored/{where.relative_to('result')} --partial-eval")

    def report_lines(self, metrics: dict) -> list[str]:
        sm = metrics.get("suite_metrics") or {}
        ckpts = sm.get("checkpoints") or {}
        if not ckpts:
            return []
        names = list(ckpts)
        models = [n for n in names if n != DO_NOTHING]
        floor = ckpts.get(DO_NOTHING, {}).get("categories", {})
        lines = ["", f"## BFCL ({sm['package']}, --model {sm['model_key']})", ""]
        if sm["partial"]:
            lines += ["Partial evaluation (eval.ids / eval.limit_per_category): scores are over the selected entries "
                      "only, not comparable with the leaderboard (BFCL's --partial-eval).", ""]
        lines += ["Accuracy per category (share of scored samples BFCL's checker calls valid; the do-nothing floor "
                  "beside each score):", "",
                  "| " + " | ".join(["category", "entries", *models, "do-nothing floor"]) + " |",
                  "|" + "---|" * (len(models) + 3)]
        for cat in sm["categories"]:
            entries = next(iter(ckpts.values()))["categories"][cat]["entries"]
            cells = [cat, str(entries), *(_pct(ckpts[n]["categories"][cat]["accuracy"]) for n in models),
                     _pct(floor.get(cat, {}).get("accuracy"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "BFCL's own aggregation (`generate_leaderboard_csv`; Overall = Non-Live 10, Live 10, Irrelevance "
                  "10, Multi-Turn 30, Agentic 40; a category not run counts 0, as in BFCL, and Agentic (web search, "
                  "memory) is never run here: Overall is at most 60%). Paper Table-2 columns: Multi-turn, Live, "
                  "Non-Live, Hall. (Rel) = live_relevance, Hall. (Irrel) = mean of irrelevance and live_irrelevance. "
                  "`*` = some of its categories were not run (counted 0).", "",
                  "| checkpoint | Overall | " + " | ".join(TABLE2) + " |", "|---|---|" + "---|" * len(TABLE2)]
        for n in names:
            t2 = ckpts[n].get("table2") or {}
            lines.append(f"| {n} | {_pct(ckpts[n].get('overall'))} | " +
                         " | ".join(_pct(t2.get(c, {}).get("value")) + ("*" if t2.get(c, {}).get("incomplete") else "")
                                    for c in TABLE2) + " |")
        lines += self._native_lines(metrics)
        if self.n > 1:
            lines += ["", f"pass@k / pass^k per category over entries whose {self.n} samples differ "
                      "(entries with identical samples are left out and counted):", "",
                      "| checkpoint | category | entries used | identical | " +
                      " | ".join(f"pass@{k}" for k in range(2, self.n + 1)) + " | " +
                      " | ".join(f"pass^{k}" for k in range(2, self.n + 1)) + " |",
                      "|---|---|---|---|" + "---|" * (2 * (self.n - 1))]
            for n in names:
                if n == DO_NOTHING:
                    continue
                for cat, m in ckpts[n]["categories"].items():
                    lines.append(f"| {n} | {cat} | {m['entries_in_pass_at_k']} | {m['identical_entries']} | " +
                                 " | ".join(_pct(m["pass_at_k"].get(str(k))) for k in range(2, self.n + 1)) + " | " +
                                 " | ".join(_pct(m["pass_hat_k"].get(str(k))) for k in range(2, self.n + 1)) + " |")
        return lines


    def _native_lines(self, metrics: dict) -> list[str]:
        """Where BFCL's own files are and how to re-score them, and the pace each checkpoint ran at."""
        lines = []
        dirs = [Path(d) for d in metrics.get("native_outputs") or []]
        if dirs:
            lines += ["", "BFCL's own result files (as `bfcl generate` writes them), one dir per checkpoint and sample; "
                          "BFCL's CLI re-scores one with:", "", f"    {self.rescore_command(dirs[0])}", "",
                      "dirs: " + ", ".join(str(d.relative_to(self.out_dir)) for d in dirs)]
        pace = metrics["suite_metrics"].get("pace") or {}
        if pace:
            lines += ["", "Pace (measured before each checkpoint's samples, docs/evaluate.md):"]
            lines += [f"- {name}: {p['samples']} samples, {p['at_once']} at once" +
                      ("" if p["estimate_s"] is None else f", about {duration(p['estimate_s'])} for "
                                                          f"{p['requests_at_least']}+ requests") +
                      f"; {Pace(**p['server']).line()}" for name, p in pace.items()]
        return lines


# Table-2 column -> (BFCL csv, column, the categories it needs)
TABLE2 = {"Multi-turn": ("multi_turn", "Multi Turn Overall Acc", MULTI_TURN),
          "Live": ("live", "Live Overall Acc", LIVE),
          "Non-Live": ("non_live", "Non-Live Overall Acc", NON_LIVE),
          "Hall. (Rel)": ("live", "Relevance Detection", ["live_relevance"]),
          "Hall. (Irrel)": ("overall", "Irrelevance Detection", ["irrelevance", "live_irrelevance"])}


def _number(cell: str | None) -> float | None:
    """A BFCL csv cell ("12.92%", "N/A") as a fraction."""
    if cell is None or cell.strip() in ("", "N/A"):
        return None
    return float(cell.strip().rstrip("%")) / 100


def _bfcl_scores(board: dict | None, run: set[str]) -> dict:
    if not board:
        return {}
    overall = board["overall"]
    groups = {"overall": _number(overall["Overall Acc"]),
              "non_live": _number(board["non_live"]["Non-Live Overall Acc"]),
              "live": _number(board["live"]["Live Overall Acc"]),
              "multi_turn": _number(board["multi_turn"]["Multi Turn Overall Acc"]),
              "irrelevance": _number(overall["Irrelevance Detection"]), "agentic": 0.0}
    table2 = {}
    for col, (csv_name, header, cats) in TABLE2.items():
        value = _number(board[csv_name][header])
        table2[col] = {"value": value, "incomplete": not set(cats) <= run}
    return {**groups, "table2": table2, "bfcl_csv": board}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"
