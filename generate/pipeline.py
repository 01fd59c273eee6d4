"""One dialogue, end to end: tasks -> roles -> episode -> judge -> record.

The two paradigms differ only in the user's behaviour and the number of chained tasks, both read from
the `pipeline` config group: task-oriented users state everything at once; user-oriented users reveal
one or two subtasks per turn, give feedback, ask for confirmation and chain several tasks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field

from toolturn.core.episode import EpisodeError, EpisodeState, run_episode
from toolturn.generate.domains import Domain
from toolturn.generate.judge import judge
from toolturn.generate.roles.agenda_user import AgendaUser, UserBehaviour
from toolturn.generate.roles.oracle_assistant import OracleAssistant
from toolturn.generate.tasks import TaskGenerator

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    index: int
    record: dict | None  # None when dropped
    drop_reason: str | None = None
    detail: str = ""
    task_rejections: dict[str, int] = field(default_factory=dict)


def record_digest(messages: list[dict], tools: list[dict]) -> str:
    """Content hash stored in meta.digest; the audit recomputes it to catch hand edits."""
    blob = json.dumps({"messages": messages, "tools": tools}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


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


class DialogueFactory:
    """Builds dialogue `index` of a run. Everything random derives from (seed, domain, index)."""

    def __init__(self, domain: Domain, cfg, prefixes: list[list[dict]] | None = None):
        self.domain, self.cfg, self.prefixes = domain, cfg, prefixes
        p = cfg.pipeline
        self.taskgen = TaskGenerator(domain, dict(p.difficulty))
        reveal = p.user.reveal_per_turn
        self.behaviour = UserBehaviour(
            reveal_per_turn=None if reveal == "all" else (int(reveal[0]), int(reveal[1])),
            withhold_ids=float(p.user.withhold_ids), confirm_prob=float(p.user.confirm_prob),
            feedback=bool(p.user.feedback), close_message=bool(p.user.close_message))
        self.tasks_range = (int(p.tasks_per_dialogue[0]), int(p.tasks_per_dialogue[1]))
        self.all_tools = {t.name: t.openai_schema() for t in domain.tools}
        self.write_tools = {t.name for t in domain.tools if t.effect == "write"}

    def _tool_subset(self, rng: random.Random, used: set[str]) -> list[dict]:
        n = int(self.cfg.tools_per_dialogue)
        names = sorted(self.all_tools)
        if n > 0 and len(names) > n:
            others = [x for x in names if x not in used]
            names = sorted(used | set(rng.sample(others, max(0, min(len(others), n - len(used))))))
        return [self.all_tools[x] for x in names]

    def _opening(self, index: int) -> tuple[list[dict], dict | None]:
        system = {"role": "system", "content": f"{self.domain.policy}\n\nYou serve {self.domain.description}."}
        if not self.prefixes:
            return [system], None
        k = index % len(self.prefixes)
        prefix = self.prefixes[k]
        messages = [dict(m) for m in prefix]
        if messages[0]["role"] != "system":
            messages.insert(0, system)
        return messages, {"source": self.cfg.prefix, "line": k, "n_messages": len(messages)}

    async def make(self, index: int) -> Outcome:
        cfg, t0 = self.cfg, time.perf_counter()
        rng = random.Random(f"{cfg.seed}:{self.domain.name}:{index}")
        rejections: dict[str, int] = {}
        scratch = self.domain.env.open_sandbox()
        try:
            n_tasks = rng.randint(*self.tasks_range)
            tasks = [t for k in range(n_tasks) if (t := self.taskgen.generate(
                scratch, rng, f"{self.domain.name}-s{cfg.seed}-d{index}-t{k}", rejections)) is not None]
            gold_end = scratch.state_hash()
        finally:
            scratch.close()
        if not tasks:
            return Outcome(index, None, "no_feasible_task", "no template fit the sampled rows", rejections)
        used = {s.tool for t in tasks for s in t.steps}
        messages, prefix_meta = self._opening(index)
        state = EpisodeState(messages=messages, tools=self._tool_subset(rng, used), start=len(messages))
        user = AgendaUser(tasks, rng, self.behaviour)
        assistant = OracleAssistant(tasks, rng, self.write_tools, float(cfg.roles.assistant.slip_rate))
        sandbox = self.domain.env.open_sandbox()
        try:
            await run_episode(state, user, assistant, sandbox, max_messages=int(cfg.max_messages))
            end_state = sandbox.state_hash()
        except EpisodeError as exc:
            return Outcome(index, None, exc.reason, str(exc), rejections)
        finally:
            sandbox.close()
        completed = [user.completed(i) for i in range(len(tasks))]
        verdict = judge(tasks, completed, state.messages, state.start, end_state, gold_end)
        if not verdict.valid:
            return Outcome(index, None, verdict.reason, verdict.reasoning, rejections)
        counts = {**count_turns(state.messages, state.start), "tasks": len(tasks), "user_turns": state.user_turns,
                  "tool_calls": state.tool_calls, "tool_errors": state.tool_errors}
        task_ids = [t.id for t in tasks]
        meta = {
            "index": index, "pipeline": cfg.pipeline.name, "tool_mode": cfg.tools.mode, "domain": self.domain.name,
            "seed": int(cfg.seed),
            "tasks": [{"id": t.id, "goal": t.goal, "difficulty": t.difficulty, "template": t.template,
                       "rubric": t.rubric(), "completed": done, "gold": t.to_dict()}
                      for t, done in zip(tasks, completed)],
            "counts": counts, "judge": verdict.to_dict(),
            "roles": dict(cfg.roles.models),
            "timing": {"latency_s": round(time.perf_counter() - t0, 4), "prompt_tokens": 0, "completion_tokens": 0},
            "gold_end_state": gold_end,
        }
        if prefix_meta:
            meta["prefix"] = prefix_meta
        meta["digest"] = record_digest(state.messages, state.tools)
        rid = hashlib.sha256(json.dumps([cfg.seed, self.domain.name, task_ids]).encode()).hexdigest()[:16]
        return Outcome(index, {"id": rid, "messages": state.messages, "tools": state.tools, "meta": meta},
                       task_rejections=rejections)
