"""`eval=sql_tau`: tau2-style evaluation on our SQL domains (built-in or any SQLite file).

Each sample is one episode in a fresh sandbox of the domain, the simulated world generation uses: the
system prompt the training data was made with (the domain's policy, `core/tasks/sources`), the item's
tools, a simulated user pursuing the item's tasks, and the assistant under test. The domain's policy
checker runs on every episode; a violation makes the reward 0 (`evaluate/reward.py`).
The user is the rule-based text user (`user=rule`, deterministic per task, so the n samples of a task
differ only by the model's sampling) or a prompted LLM (`user=llm`).

The tool offer (`eval.tools_per_episode`, the plan's tools plus distractors, 0 = all) follows the
checkpoints' lineage by default (`auto`): the `tools_per_dialogue` their training data listed, so a model
is scored on the prompt shape it was trained on; with no lineage (base, oracle) it is
`eval.tools_fallback`; an integer overrides both, and the report says so.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf
from toolturn.core.checks import PROBABILITY, WEIGHTS, Check, integer
from toolturn.core.domains import prepare_domain
from toolturn.core.episode import EpisodeError, EpisodeState, run_episode
from toolturn.core.errors import ToolturnError
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
from toolturn.evaluate.behaviour import World
from toolturn.evaluate.reward import score
from toolturn.evaluate.runner import Checkpoint
from toolturn.evaluate.suites import register
from toolturn.evaluate.tasks import (EvalItem, check_disjoint, load_or_make, make_items, training_fingerprints,
                                     training_tasks)

AUTO = "auto"


def assistant_digest(messages: list[dict], start: int) -> str:
    """What the assistant did in an episode (texts and calls), to spot samples that are all the same."""
    said = [[m.get("content") or "", m.get("tool_calls") or []] for m in messages[start:] if m["role"] == "assistant"]
    return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ToolOffer:
    tools: int  # tools offered per episode (0 = all)
    source: str  # eval.tools_per_episode (set) | lineage | eval.tools_fallback
    trained_with: dict[str, int]  # checkpoint -> tools_per_dialogue of its training data, where recorded

    def to_dict(self) -> dict:
        return asdict(self)


def tool_offer(setting: int | str, fallback: int, checkpoints: Sequence[Checkpoint]) -> ToolOffer:
    """The tools offered per episode: `setting` if an integer; for `auto` the offer every checkpoint with a
    lineage was trained on (they must agree), else `fallback`."""
    trained = {c.name: c.trained_tools for c in checkpoints if c.trained_tools is not None}
    if setting != AUTO:
        return ToolOffer(int(setting), "eval.tools_per_episode", trained)
    offers = sorted(set(trained.values()))
    if len(offers) > 1:
        raise ToolturnError(f"the checkpoints were trained with different tool offers (tools_per_dialogue: "
                            f"{', '.join(f'{k} {v}' for k, v in trained.items())}); set eval.tools_per_episode "
                            f"to the one to evaluate them all with")
    return ToolOffer(offers[0], "lineage", trained) if offers else ToolOffer(int(fallback), "eval.tools_fallback", {})


def describe_offer(offer: dict) -> str:
    """e.g. `4 (set by eval.tools_per_episode; checkpoint X was trained with 12)`."""
    def count(n: int) -> str:
        return "all tools" if n == 0 else str(n)

    trained = "; ".join(f"checkpoint {k} was trained with {count(v)}" for k, v in offer["trained_with"].items())
    how = {"eval.tools_per_episode": "set by eval.tools_per_episode" + (f"; {trained}" if trained else ""),
           "lineage": f"from the checkpoints' lineage: {trained}",
           "eval.tools_fallback": "eval.tools_fallback: no checkpoint records the tool offer it was trained with"}
    return f"{count(offer['tools'])} ({how[offer['source']]})"


@register("sql_tau")
class SqlTauSuite:
    CHECKS = {"eval.tasks_per_episode": integer(1),
              "eval.tools_per_episode": Check(f"{AUTO} or a non-negative integer",
                                              lambda v: v == AUTO or integer(0).ok(v)),
              "eval.tools_fallback": integer(0),
              "eval.max_messages": integer(1), "eval.max_steps_per_turn": integer(1),
              "eval.refusal_share": PROBABILITY, "eval.difficulty": WEIGHTS}
    parts = ("db_match", "facts_communicated", "refusals_explained", "ended_by_user", "policy_compliant")
    checker = "the reward's checks (evaluate/reward.py)"  # every scored episode runs all of them

    def __init__(self, cfg, out_dir: Path, checkpoints: Sequence[Checkpoint] = ()):
        """`checkpoints`: the evaluation's, whose lineage sets the tool offer (none: the fallback)."""
        e = cfg.eval
        self.offer = tool_offer(e.tools_per_episode, e.tools_fallback, checkpoints)
        self.domain = prepare_domain(cfg.domain, out_dir, seed=int(cfg.seed))
        self.name, self.domain_name = e.name, self.domain.name
        self.max_messages, self.max_steps = int(e.max_messages), int(e.max_steps_per_turn)
        settings = {"suite": e.name, "domain": self.domain.name, "seed": int(cfg.seed),
                    "num_tasks": int(cfg.num_tasks), "tasks_per_episode": int(e.tasks_per_episode),
                    "tools_per_episode": self.offer.tools, "refusal_share": float(e.refusal_share),
                    "difficulty": OmegaConf.to_container(e.difficulty, resolve=True)}
        training = training_tasks(list(cfg.get("train_data") or []))  # read once: drawing and checking use it
        excluded = training_fingerprints(training)
        if excluded:  # tasks drawn around other training data are other tasks
            settings["held_out_from"] = hashlib.sha256("\n".join(sorted(excluded)).encode()).hexdigest()[:16]
        self.draw = load_or_make(out_dir / "tasks.jsonl", settings, lambda: make_items(
            self.domain, rule_task_generator(self.domain, cfg.domain, settings["difficulty"], e.refusal_share),
            int(cfg.num_tasks), int(cfg.seed), int(e.tasks_per_episode), self.offer.tools, excluded))
        self.items: list[EvalItem] = self.draw.items
        check_disjoint(self.items, training)
        self.toolset = {t["function"]["name"]: t for t in self.domain.toolset}
        self.policy = policy_for(self.domain, e.get("policy_file"))
        self.world = World(self.policy, {t.name: t for t in self.domain.tools}, self.domain.schema, self.domain.env)
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
                "kind": item.kind, "needs_write": item.needs_write, "user_turns": state.user_turns,
                "tool_calls": state.tool_calls, "tool_errors": state.tool_errors, "n_messages": len(state.messages),
                "assistant_digest": assistant_digest(state.messages, state.start),
                "latency_s": round(time.perf_counter() - t0, 3), "user_llm_calls": meter.calls,
                "messages": state.messages}

    def header(self) -> dict:
        """metrics.json's record of the tool offer and of the task kinds drawn."""
        return {"tool_offer": self.offer.to_dict(), "task_kinds": self.draw.kinds()}

    def report_lines(self, metrics: dict) -> list[str]:
        kinds = metrics["task_kinds"]
        lines = ["", f"Tool offer: {describe_offer(metrics['tool_offer'])}.", "",
                 "Task kinds drawn (refusal: the policy forbids the request; write: the gold plans change the "
                 "database; multi_step: read-only with a step that needs an earlier result; read: the rest): " +
                 ", ".join(f"{k} {v}" for k, v in kinds["counts"].items()) + "."]
        lines += [f"Not drawn: {k}: {why}." for k, why in kinds["skipped"].items()]
        return lines

    def close(self) -> None:
        self.domain.env.close()
