"""Execution-grounded judge (rule-based): valid iff the database ends where the gold plans end,
every task was completed, and every fact the tasks require was stated by the assistant."""

from __future__ import annotations

from dataclasses import dataclass

from toolturn.core.types import Task, format_value


@dataclass
class Judgment:
    valid: bool
    reason: str  # "ok" or the drop reason counted in stats.json
    reasoning: str

    def to_dict(self) -> dict:
        return {"judgment": "valid" if self.valid else "invalid", "reason": self.reason, "reasoning": self.reasoning}


def judge(tasks: list[Task], completed: list[bool], messages: list[dict], start: int,
          end_state: str, gold_end_state: str) -> Judgment:
    unfinished = [t.id for t, done in zip(tasks, completed) if not done]
    if unfinished:
        return Judgment(False, "incomplete_task", f"the user did not accept tasks {unfinished}")
    if end_state != gold_end_state:
        return Judgment(False, "end_state_mismatch", "database end state differs from the gold plans' end state")
    said = "\n".join(m.get("content") or "" for m in messages[start:] if m["role"] == "assistant")
    for task in tasks:
        for st in task.subtasks:
            for item in st.report:
                if format_value(item.expected) not in said:
                    return Judgment(False, "missing_fact", f"{task.id}: never stated {item.label} = "
                                                           f"{format_value(item.expected)}")
    n_facts = sum(len(st.report) for t in tasks for st in t.subtasks)
    return Judgment(True, "ok", f"end state matches the gold plans; all {n_facts} required facts were stated")
