"""One dialogue of a generation run, end to end: tasks -> roles -> episode -> judge -> record.

The two paradigms differ only in the user's behaviour and the number of chained tasks, both read from
the `pipeline` config group: task-oriented users state everything at once; user-oriented users reveal
one or two subtasks per turn, give feedback, ask for confirmation and chain several tasks. Each role
is rule-based or an LLM (`roles` group); tools are executed SQL or LLM-simulated (`tools` group).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field

from toolturn.core.domains import Domain
from toolturn.core.endpoints import Endpoints, sampling
from toolturn.core.episode import EpisodeError, EpisodeState, run_episode
from toolturn.core.judges.execution import (
    Judgment,
    assistant_text,
    judge,
    missing_fact,
    task_problem,
    unexplained_refusal,
)
from toolturn.core.judges.rubric import llm_judge
from toolturn.core.judges.structural import check_structure, rubric_tools
from toolturn.core.llm import LLMError
from toolturn.core.llm_cache import CacheScope
from toolturn.core.policy import policy_for
from toolturn.core.policy_check import check_policy
from toolturn.core.role_model import Meter, RoleModel
from toolturn.core.roles.agenda_user import AgendaUser, UserBehaviour
from toolturn.core.roles.llm_assistant import LLMAssistant
from toolturn.core.roles.llm_user import LLMUser
from toolturn.core.roles.oracle_assistant import OracleAssistant
from toolturn.core.rundir import record_digest
from toolturn.core.tasks.llm_goals import LLMTaskGenerator, tool_lines
from toolturn.core.tasks.sources import assistant_system_prompt, oracle_identification, rule_task_generator
from toolturn.core.tasks.types import Task
from toolturn.core.tools.simulator import ToolSimulator
from toolturn.generate.config import llm_roles
from toolturn.generate.paraphrase import ParaphraseSettings, dialogue_values, paraphrase_dialogue

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    index: int
    record: dict | None  # None when dropped
    drop_reason: str | None = None
    detail: str = ""
    task_rejections: dict[str, int] = field(default_factory=dict)
    fatal: str | None = None  # the run must stop (e.g. the LLM endpoint is gone); nothing is committed
    attempt: dict | None = None  # {tasks, user_turns} of a dropped dialogue, for statistics over all attempts
    provisional: bool = False  # dropped because the endpoint rejected a request: logged only if the run goes on


def count_turns(messages: list[dict], start: int) -> dict[str, int]:
    first = 1 if messages and messages[0]["role"] == "system" else 0
    iterations, per_request, run = 0, [], 0
    for m in messages[start:]:
        if m["role"] == "user":
            per_request.append(run)
            run = 0
        elif m["role"] == "assistant" and m.get("tool_calls"):
            iterations += 1
            run += 1
    per_request.append(run)
    return {"turns": len(messages) - first, "steps": iterations, "max_steps_per_request": max(per_request)}


def _attempt(tasks: list[Task], state: EpisodeState) -> dict:
    return {"tasks": len(tasks), "user_turns": state.user_turns, "turns": len(state.messages) - state.start}


def behaviour_from(p) -> UserBehaviour:
    reveal = p.user.reveal_per_turn
    return UserBehaviour(reveal_per_turn=None if reveal == "all" else (int(reveal[0]), int(reveal[1])),
                         withhold_ids=float(p.user.withhold_ids), confirm_prob=float(p.user.confirm_prob),
                         feedback=bool(p.user.feedback), close_message=bool(p.user.close_message))


RULE_NAMES = {"task_generator": "rule:programmatic", "user": "rule:agenda", "assistant": "rule:oracle",
              "judge": "rule:execution"}


class DialogueFactory:
    """Builds dialogue `index` of a run. Everything random derives from (seed, domain, index)."""

    def __init__(self, domain: Domain, cfg, prefixes: list[list[dict]] | None = None,
                 endpoints: Endpoints | None = None):
        self.domain, self.cfg, self.prefixes, self.endpoints = domain, cfg, prefixes, endpoints
        p, r = cfg.pipeline, cfg.roles
        self.seed = int(cfg.seed)
        self.behaviour = behaviour_from(p)
        self.tasks_range = (int(p.tasks_per_dialogue[0]), int(p.tasks_per_dialogue[1]))
        self.simulated = cfg.tools.mode == "simulated"
        self.all_tools = {t["function"]["name"]: t for t in domain.toolset}
        self.write_tools = {t.name for t in domain.tools if t.effect == "write"}
        specs = llm_roles(cfg)
        self.llm = {role: spec.endpoint for role, spec in specs.items()}
        # plain values, read once: OmegaConf access is slow on the per-dialogue path
        self.samplings = {role: sampling(spec) for role, spec in specs.items()}
        self.max_messages, self.max_dialogue_bytes = int(cfg.max_messages), int(cfg.max_dialogue_bytes)
        self.tools_per_dialogue, self.prefix_source = int(cfg.tools_per_dialogue), cfg.prefix
        self.meta_base = {"pipeline": p.name, "tool_mode": cfg.tools.mode, "domain": domain.name, "seed": self.seed}
        # a slip is made to be caught: where the user gives no feedback (task-oriented) nobody would correct it
        self.slip_rate = float(cfg.roles.assistant.get("slip_rate", 0.0)) if self.behaviour.feedback else 0.0
        self.task_oriented = self.behaviour.reveal_per_turn is None
        self.user_prompt = str(cfg.roles.user.get("prompt", "user_simulator"))
        # policy.mode and policy.refusal_share are checked with the rest of the config (generate/config.py)
        self.policy = policy_for(domain, cfg.policy.get("file"))
        self.policy_mode = str(cfg.policy.mode)
        share = cfg.policy.refusal_share
        self.identify = oracle_identification(cfg.domain)
        self.system_prompt = assistant_system_prompt(domain, self.policy)
        if r.task_generator.kind == "rule":
            self.taskgen = rule_task_generator(domain, cfg.domain, dict(cfg.tasks.difficulty), float(share))
            self.llm_taskgen = None
        else:
            self.taskgen = None
            self.llm_taskgen = LLMTaskGenerator(domain, domain.schema_sql, dict(cfg.tasks.difficulty), self.seed)
            self.task_tool_text = tool_lines(list(self.all_tools.values()))  # in every task generator prompt
        self.roles_meta = {role: (self.endpoints.model_name(self.llm[role]) if role in self.llm else RULE_NAMES[role])
                           for role in RULE_NAMES}
        if self.simulated:
            self.roles_meta["tool_simulator"] = self.endpoints.model_name(self.llm["tool_simulator"])
        self.paraphrase = ParaphraseSettings.from_config(cfg.get("paraphrase"))

    # ---- pieces ---------------------------------------------------------------------------------
    def _tool_subset(self, rng: random.Random, used: set[str]) -> list[dict]:
        n = self.tools_per_dialogue
        names = sorted(self.all_tools)
        if n > 0 and len(names) > n:
            others = [x for x in names if x not in used]
            names = sorted(used | set(rng.sample(others, max(0, min(len(others), n - len(used))))))
        return [self.all_tools[x] for x in names]

    def _opening(self, index: int) -> tuple[list[dict], dict | None]:
        system = {"role": "system", "content": self.system_prompt}
        if not self.prefixes:
            return [system], None
        k = index % len(self.prefixes)
        messages = [dict(m) for m in self.prefixes[k]]
        if messages[0]["role"] != "system":
            messages.insert(0, system)
        return messages, {"source": self.prefix_source, "line": k, "n_messages": len(messages)}

    async def _tasks(self, rng, index, models, rejections) -> tuple[list[Task], list[str] | None]:
        """The dialogue's tasks and, for gold plans, the database state after each task."""
        n_tasks = rng.randint(*self.tasks_range)
        ids = [f"{self.domain.name}-s{self.seed}-d{index}-t{k}" for k in range(n_tasks)]
        if self.taskgen is None:
            tasks = []
            for task_id in ids:
                tasks.append(await self.llm_taskgen.generate(models["task_generator"], rng, task_id,
                                                             self.task_tool_text, tasks))
            return tasks, None
        scratch = self.domain.env.open_sandbox()
        try:
            tasks, gold = [], []
            for task_id in ids:
                task = self.taskgen.generate(scratch, rng, task_id, rejections, tasks)
                if task is not None:
                    tasks.append(task)
                    gold.append(scratch.state_hash())
            return tasks, gold
        finally:
            scratch.close()

    def _used_tools(self, tasks: list[Task]) -> set[str]:
        names = {s.tool for t in tasks for s in t.steps}
        return names | {n for t in tasks for n in rubric_tools(t, set(self.all_tools))}

    # ---- one dialogue ---------------------------------------------------------------------------
    async def make(self, index: int) -> Outcome:
        try:
            return await self._make(index)
        except LLMError as exc:
            if exc.fatal:  # the endpoint is unusable (key, URL, rate limit, down): stop without burning the index
                return Outcome(index, None, fatal=str(exc))
            # e.g. a request too long, or a reply over the size cap: this dialogue's failure, unless the run
            # stops on a streak of them (a bad model setting), whose indices then stay open (run._produce)
            return Outcome(index, None, f"llm_{exc.reason}", str(exc)[:300], provisional=True)

    async def _make(self, index: int) -> Outcome:
        t0 = time.perf_counter()
        rng, rejections = random.Random(f"{self.seed}:{self.domain.name}:{index}"), {}
        meter = Meter(cache_scope=CacheScope(f"dialogue:{self.seed}:{self.domain.name}:{index}"))
        models = {role: RoleModel(role, self.endpoints.client(ep), self.samplings[role], meter)
                  for role, ep in self.llm.items()}
        try:
            tasks, gold = await self._tasks(rng, index, models, rejections)
        except EpisodeError as exc:
            return Outcome(index, None, exc.reason, str(exc), rejections)
        if not tasks:
            return Outcome(index, None, "no_feasible_task", "no template fit the sampled rows", rejections)
        messages, prefix_meta = self._opening(index)
        state = EpisodeState(messages=messages, tools=self._tool_subset(rng, self._used_tools(tasks)),
                             start=len(messages))
        sandbox = None if self.simulated else self.domain.env.open_sandbox()
        executor = sandbox or ToolSimulator(models["tool_simulator"], state.tools, self.domain.return_schemas,
                                            rng, state.messages)
        available = {t["function"]["name"] for t in state.tools}

        def check(k: int, since: int) -> str | None:
            current = sandbox.state_hash() if sandbox is not None and gold else None
            return task_problem(tasks[k], state.messages, since, available, current, gold[k] if gold else None)

        if "user" in models:
            user = LLMUser(models["user"], tasks, self.task_oriented, check, self.user_prompt)
        else:
            user = AgendaUser(tasks, rng, self.behaviour)
        if "assistant" in models:
            assistant = LLMAssistant(models["assistant"])
        else:
            assistant = OracleAssistant(tasks, rng, self.write_tools, self.slip_rate, self.policy, self.identify)
        try:
            await run_episode(state, user, assistant, executor, max_messages=self.max_messages,
                              max_dialogue_bytes=self.max_dialogue_bytes)
            end_state = sandbox.state_hash() if sandbox is not None else None
        except EpisodeError as exc:
            return Outcome(index, None, exc.reason, str(exc), rejections, attempt=_attempt(tasks, state))
        finally:
            if sandbox is not None:
                sandbox.close()
        completed = [user.completed(i) for i in range(len(tasks))]
        verdict = await self._judge(tasks, completed, state, end_state, gold, models)
        if not verdict.valid:
            return Outcome(index, None, verdict.reason, verdict.reasoning, rejections, attempt=_attempt(tasks, state))
        paraphrased = None
        if self.paraphrase is not None:
            paraphrased = await self._paraphrase(tasks, state, meter)
        return Outcome(index, self._record(index, tasks, completed, state, verdict, meter, gold, prefix_meta, t0,
                                           paraphrased), task_rejections=rejections)

    async def _paraphrase(self, tasks: list[Task], state: EpisodeState, meter: Meter) -> dict:
        """The verified paraphrase pass (generate/paraphrase.py) on a kept dialogue: `state.messages` becomes the
        dialogue with the kept rewrites; returns meta.paraphrase."""
        settings = self.paraphrase
        model = RoleModel("paraphrase", self.endpoints.client(settings.endpoint), settings.sampling, meter)
        values = dialogue_values([t.facts for t in tasks], state.messages[state.start:])

        async def verify(messages: list[dict]) -> dict[str, str]:
            return await self._problems(tasks, messages, state.start, state.tools)

        state.messages, turns = await paraphrase_dialogue(model, settings, state.messages, state.start, values, verify)
        return {"model": self.endpoints.model_name(settings.endpoint), "turns": turns}

    async def _problems(self, tasks: list[Task], messages: list[dict], start: int, tools: list[dict]) -> dict[str, str]:
        """Every problem the judges find in a kept dialogue's `messages` (key: the problem and where it is ->
        its reason): the structural checks, the execution judge's facts and refusals, the policy checker."""
        out = {}
        problem = check_structure(tasks, messages, start, tools)
        if problem is not None:
            out[f"structure:{problem.reason}"] = problem.reason
        said = assistant_text(messages, start)
        for task in tasks:
            if task.steps and missing_fact(task, said):
                out[f"missing_fact:{task.id}"] = "missing_fact"
            if task.steps and unexplained_refusal(task, said):
                out[f"refusal_not_explained:{task.id}"] = "refusal_not_explained"
        found = await asyncio.to_thread(check_policy, self.policy, messages, start, self.domain.tools,
                                        self.domain.schema, None if self.simulated else self.domain.env)
        out.update({f"policy_{v.rule}:{v.message}": f"policy_{v.rule}" for v in found})
        return out

    async def _judge(self, tasks, completed, state, end_state, gold, models) -> Judgment:
        """Structural checks first, then the policy checker, whatever the roles and the judge
        (policy=enforce drops a violating dialogue with the rule's name, policy=report keeps and flags
        it); then judge.kind=rule: execution-grounded (gold plans), or judge.kind=llm: the rubric
        validator decides."""
        problem = check_structure(tasks, state.messages, state.start, state.tools)
        if problem is not None:
            return Judgment(False, problem.reason, problem.detail)
        # a replay of every call, in a worker thread like the calls themselves (core/episode.execute)
        found = await asyncio.to_thread(check_policy, self.policy, state.messages, state.start, self.domain.tools,
                                        self.domain.schema, None if self.simulated else self.domain.env)
        violations = [v.to_dict() for v in found]
        if violations and self.policy_mode == "enforce":
            first = violations[0]
            return Judgment(False, f"policy_{first['rule']}", f"message {first['message']}: {first['detail']}")
        verdict = await self._verdict(tasks, completed, state, end_state, gold, models)
        verdict.policy = violations  # policy=report: kept, and flagged in meta.policy
        return verdict

    async def _verdict(self, tasks, completed, state, end_state, gold, models) -> Judgment:
        if "judge" not in models:
            return judge(tasks, completed, state.messages, state.start, end_state, gold[-1])
        if not all(completed):
            return Judgment(False, "incomplete_task", "the user did not accept every task")
        try:
            valid, reasoning = await llm_judge(models["judge"], tasks, state.messages, state.start, state.tools)
        except EpisodeError as exc:
            return Judgment(False, exc.reason, str(exc))
        return Judgment(valid, "ok" if valid else "judge_invalid", reasoning)

    def _record(self, index, tasks, completed, state, verdict, meter, gold, prefix_meta, t0, paraphrased=None) -> dict:
        counts = {**count_turns(state.messages, state.start), "tasks": len(tasks), "user_turns": state.user_turns,
                  "tool_calls": state.tool_calls, "tool_errors": state.tool_errors}
        meta = {
            "index": index, **self.meta_base,
            "tasks": [{"id": t.id, "goal": t.goal, "difficulty": t.difficulty, "template": t.template,
                       "rubric": t.rubric(), "completed": done, "gold": t.to_dict()}
                      for t, done in zip(tasks, completed)],
            "counts": counts, "judge": verdict.to_dict(), "roles": self.roles_meta,
            "timing": {"latency_s": round(time.perf_counter() - t0, 4), "prompt_tokens": meter.prompt_tokens,
                       "completion_tokens": meter.completion_tokens, "llm_calls": meter.calls},
            "llm_events": dict(meter.events),
        }
        if gold:
            meta["gold_end_state"] = gold[-1]
        if verdict.policy:
            meta["policy"] = {"mode": self.policy_mode, "violations": verdict.policy}
        if prefix_meta:
            meta["prefix"] = prefix_meta
        if paraphrased is not None:
            meta["paraphrase"] = paraphrased
        meta["digest"] = record_digest(state.messages, state.tools)
        rid = hashlib.sha256(json.dumps([self.seed, self.domain.name, [t.id for t in tasks]]).encode()).hexdigest()[:16]
        return {"id": rid, "messages": state.messages, "tools": state.tools, "meta": meta}

