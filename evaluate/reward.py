"""The reward of one evaluation episode: the product of its parts, each recorded.

    reward = db_match x facts_communicated x ended_by_user [x no policy violation]

- db_match: the sandbox's end state equals the gold plans' end state (table hashes);
- facts_communicated: every fact the tasks require was stated by the assistant, as a whole token or a
  normalised number (`core.judges.facts.mentions`, so "1" is not found in "10");
- ended_by_user: the user ended the episode (done or gave up), not the message/step limit or an error;
- policy: when the domain has a policy checker (`PolicyChecker`: messages -> violations), any violation
  makes the reward 0. Domains have none yet; the runner passes `violations=None` for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from toolturn.core.judges.execution import assistant_text, missing_fact
from toolturn.core.tasks.types import Task

USER_ENDINGS = ("user_done", "user_gave_up")


class PolicyChecker(Protocol):
    def __call__(self, messages: list[dict], tools: list[dict]) -> list[str]: ...


@dataclass
class Reward:
    reward: float
    db_match: bool
    facts_communicated: bool
    ended_by_user: bool
    missing_fact: str | None
    policy_violations: list[str] | None  # None: the domain has no policy checker

    def to_dict(self) -> dict:
        return asdict(self)


def score(tasks: list[Task], messages: list[dict], start: int, end_state: str | None, gold_end_state: str,
          termination: str, violations: list[str] | None = None) -> Reward:
    db = end_state == gold_end_state
    said = assistant_text(messages, start)
    missing = next((f"{t.id}: {m}" for t in tasks if (m := missing_fact(t, said))), None)
    by_user = termination in USER_ENDINGS
    ok = db and missing is None and by_user and not violations
    return Reward(float(ok), db, missing is None, by_user, missing, violations)
