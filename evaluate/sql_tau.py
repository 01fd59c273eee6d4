"""`eval=sql_tau`: tau2-style evaluation on our SQL domains (built-in or any SQLite file).

Each sample is one episode in a fresh sandbox of the domain, the simulated world generation uses: the
system prompt the training data was made with (the domain's policy, `core/tasks/sources`), the item's
tools, a simulated user pursuing the item's tasks, and the assistant under test. The domain's policy
checker runs on every episode; a violation makes the reward 0 (`evaluate/reward.py`).
The user is the rule-based text user (`user=rule`, deterministic per task, so the n samples of a task
differ only by the model's sampling) or a prompted LLM (`user=llm`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

from omegaconf import OmegaConf
from toolturn.core.checks import PROBABILITY, WEIGHTS, integer
from toolturn.core.domains import prepare_domain
from toolturn.core.episode import EpisodeError, EpisodeState, run_episode
from toolturn.core.judges.execution import task_problem
from toolturn.core.llm import LLMError, Sampling
from toolturn.core.policy import policy_for
from toolturn.core.policy_check import check_policy
from toolturn.core.role_model import Meter, RoleModel
from toolturn.core.roles.llm_user import LLMUser
from toolturn.core.roles.text_user import TextUser, TextUserBehaviour
from toolturn.core.tasks.sources import (
    assistant_system_prompt,
    oracle_identification,
    rule_task_generator,
)
from toolturn.evaluate.assistants import InfraError
from toolturn.evaluate.reward import score
from toolturn.evaluate.suites import register
from toolturn.evaluate.tasks import EvalItem, check_disjoint, load_or_make, make_items


def assistant_digest(messages: list[dict], start: int) -> str:
    """What the assistant did in an episode (texts and calls), to spot samples that are all the same."""
    said = [[m.get("content") or "", m.get("tool_calls") or []] for m in messages[start:] if m["role"] == "assistant"]
    return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]


@register("sql_tau")
class SqlTauSuite:
    CHECKS = {"eval.tasks_per_episode": integer(1), "eval.tools_per_episode": integer(0),
              "eval.max_messages": integer(1), "eval.max_steps_per_turn": integer(1),
              "eval.refusal_share": PROBABILITY, "eval.difficulty": WEIGHTS}
    parts = ("db_match", "facts_communicated", "refusals_explained", "ended_by_user", "policy_compliant")

    def __init__(self, cfg, out_dir: Path):
        e = cfg.eval
        self.domain = prepare_domain(cfg.domain, out_dir, seed=int(cfg.seed))
        self.name, self.domain_name = e.name, self.domain.name
        self.max_messages, self.max_steps = int(e.max_messages), int(e.max_steps_per_turn)
        settings = {"suite": e.name, "domain": self.domain.name, "seed": int(cfg.seed),
                    "num_tasks": int(cfg.num_tasks), "tasks_per_episode": int(e.tasks_per_episode),
                    "tools_per_episode": int(e.tools_per_episode), "refusal_share": float(e.refusal_share),
                    "difficulty": OmegaConf.to_container(e.difficulty, resolve=True)}
        self.items: list[EvalItem] = load_or_make(out_dir / "tasks.jsonl", settings, lambda: make_items(
            self.domain, rule_task_generator(self.domain, cfg.domain, settings["difficulty"], e.refusal_share),
            int(cfg.num_tasks), int(cfg.seed), int(e.tasks_per_episode), int(e.tools_per_episode)))
        check_disjoint(self.items, list(cfg.get("train_data") or []))
        self.toolset = {t["function"]["name"]: t for t in self.domain.toolset}
        self.policy = policy_for(self.domain, e.get("policy_file"))
        self.identify = oracle_identification(cfg.domain)  # the oracle's, as in generation
        self.system = assistant_system_prompt(self.domain, self.policy)
        u = cfg.user
        self.user_kind = u.kind
        if u.kind == "rule":
            reveal = tuple(int(x) for x in u.reveal_per_turn)
            self.behaviour = TextUserBehaviour(reveal, float(u.withhold_ids), int(u.max_stall_turns), bool(u.feedback))
            self.user_name = (f"{TextUser.name} (reveal {reveal[0]}-{reveal[1]} subtasks/turn, withhold ids "
                              f"{self.behaviour.withhold_ids:g}, gives up after {self.behaviour.max_stall_turns} "
                              f"turns without progress)")
        else:
            self.user_sampling = Sampling(temperature=float(u.sampling.temperature), top_p=float(u.sampling.top_p),
                                          max_tokens=int(u.sampling.max_tokens))
            self.user_prompt = str(u.prompt)
            self.user_name = f"llm:{u.endpoint.model} (prompt {self.user_prompt}, temperature {u.sampling.temperature})"
        self.user_client = None  # set by the app when user=llm (the endpoint lives in the app's Endpoints)

    def _user(self, item: EvalItem, state: EpisodeState, sandbox, meter: Meter):
        if self.user_kind == "rule":
            return TextUser(item.tasks, random.Random(f"user:{item.id}"), self.behaviour,
                            lambda k: sandbox.state_hash() == item.gold[k])
        available = {t["function"]["name"] for t in state.tools}

        def check(k: int, since: int) -> str | None:
            return task_problem(item.tasks[k], state.messages, since, available, sandbox.state_hash(), item.gold[k])

        model = RoleModel("user", self.user_client, self.user_sampling, meter)
        return LLMUser(model, item.tasks, False, check, self.user_prompt)

    async def episode(self, item: EvalItem, assistant) -> dict:
        t0 = time.perf_counter()
        state = EpisodeState(messages=[{"role": "system", "content": self.system}],
                             tools=[self.toolset[n] for n in item.tools], start=1)
        sandbox = self.domain.env.open_sandbox()
        meter = Meter()
        try:
            user = self._user(item, state, sandbox, meter)
            try:
                await run_episode(state, user, assistant, sandbox, self.max_messages, self.max_steps)
                outcome = getattr(user, "outcome", None) or ("done" if all(map(user.completed, range(len(item.tasks))))
                                                             else "gave_up")
                termination = f"user_{outcome}"
            except EpisodeError as exc:
                termination = exc.reason
            except LLMError as exc:  # the LLM user's endpoint, after its client's retries
                raise InfraError(f"user_{exc.reason}", str(exc)) from None
            end_state = sandbox.state_hash()
        finally:
            sandbox.close()
        d = self.domain
        violations = [v.to_dict() for v in check_policy(self.policy, state.messages, state.start, d.tools, d.schema,
                                                         d.env)]
        reward = score(item.tasks, state.messages, state.start, end_state, item.gold[-1], termination, violations)
        return {"reward": reward.reward, "parts": reward.to_dict(), "termination": termination,
                "needs_write": item.needs_write, "user_turns": state.user_turns, "tool_calls": state.tool_calls,
                "tool_errors": state.tool_errors, "n_messages": len(state.messages),
                "assistant_digest": assistant_digest(state.messages, state.start),
                "latency_s": round(time.perf_counter() - t0, 3), "user_llm_calls": meter.calls,
                "messages": state.messages}

    def close(self) -> None:
        self.domain.env.close()
