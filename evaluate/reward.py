"""The reward of one evaluation episode: the product of its parts, each recorded.

    reward = db_match x facts_communicated x refusals_explained x ended_by_user x policy_compliant

- db_match: the sandbox's end state equals the gold plans' end state (table hashes);
- facts_communicated: every fact the tasks require was stated by the assistant, as a whole token or a
  normalised number (`core.judges.facts.mentions`, so "1" is not found in "10");
- refusals_explained: every request the policy forbids was refused in words (the generation judge's
  `unexplained_refusal`; the reason's values are facts of the task, checked above);
- ended_by_user: the user ended the episode (done or gave up), not the message/step limit or an error;
- policy_compliant: the domain's policy checker (`core/policy_check.check_policy`, the one generation
  runs on every dialogue) found no violation; each violation is recorded (rule, message index, detail).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from toolturn.core.judges.execution import (
    assistant_text,
    missing_fact,
    unexplained_refusal,
)
from toolturn.core.tasks.types import Task

USER_ENDINGS = ("user_done", "user_gave_up")


@dataclass
class Reward:
    reward: float
    db_match: bool
    facts_communicated: bool
    refusals_explained: bool
    ended_by_user: bool
    policy_compliant: bool
    missing_fact: str | None
    unexplained_refusal: str | None
    policy_violations: list[dict] = field(default_factory=list)  # {rule, message, detail}

    def to_dict(self) -> dict:
        return asdict(self)


def score(tasks: list[Task], messages: list[dict], start: int, end_state: str | None, gold_end_state: str,
          termination: str, violations: list[dict] = ()) -> Reward:
    db = end_state == gold_end_state
    said = assistant_text(messages, start)
    missing = next((f"{t.id}: {m}" for t in tasks if (m := missing_fact(t, said))), None)
    refusal = next((f"{t.id}: {m}" for t in tasks if (m := unexplained_refusal(t, said))), None)
    by_user = termination in USER_ENDINGS
    ok = db and missing is None and refusal is None and by_user and not violations
    return Reward(float(ok), db, missing is None, refusal is None, by_user, not violations, missing, refusal,
                  list(violations))
