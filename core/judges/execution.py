"""Judges and the completion check they share with the LLM user simulator's guard.

The execution-grounded judge (rule-based) keeps a dialogue iff the database ends where the gold plans
end, every task was accepted, every fact the tasks require was stated, and every request the policy
forbids was refused in words (a refusal's gold plan only reads, so its gold state is the unchanged
database, and its facts are the reason's values). `task_problem` is the
same test applied to one task mid-dialogue: the LLM user's `is_task_complete` is accepted only when
it returns None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolturn.core.judges.facts import mentions
from toolturn.core.judges.structural import called_tools, rubric_tools
from toolturn.core.tasks.types import Task, format_value


@dataclass
class Judgment:
    valid: bool
    reason: str  # "ok" or the drop reason counted in stats.json
    reasoning: str
    policy: list[dict] = field(default_factory=list)  # policy violations of a kept dialogue (policy=report)

    def to_dict(self) -> dict:
        return {"judgment": "valid" if self.valid else "invalid", "reason": self.reason, "reasoning": self.reasoning}


def assistant_text(messages: list[dict], start: int) -> str:
    return "\n".join(m.get("content") or "" for m in messages[start:] if m["role"] == "assistant")


# A refusal says so: the judge looks for one of these in the assistant's text.
REFUSAL_CUE = re.compile(r"\b(can't|cannot|can not|unable|not able|not possible|not allowed|won't be able|"
                         r"isn't possible|is not possible)\b", re.IGNORECASE)


def unexplained_refusal(task: Task, said: str) -> str | None:
    """A refusal subtask (the policy forbids the request) must be refused in so many words, stating the
    values the policy's reason names (the booking's status, the bag's weight, ...), so that a bare
    "I can't help with that" does not pass for an explanation."""
    for st in task.subtasks:
        if st.kind != "refuse":
            continue
        missing = [k for k, v in st.detail.get("reason_facts", {}).items() if not mentions(said, v)]
        if not REFUSAL_CUE.search(said) or missing:
            why = f" (the reason's {', '.join(missing)} never stated)" if missing else ""
            return f"the request to {st.detail.get('say', st.entity)} was not refused with a reason{why}"
    return None


def missing_fact(task: Task, said: str) -> str | None:
    for st in task.subtasks:
        for item in st.report:
            if not mentions(said, item.expected):
                return f"{item.label} = {format_value(item.expected)}"
    return None


def task_problem(task: Task, messages: list[dict], since: int, available: set[str],
                 state: str | None = None, gold_state: str | None = None) -> str | None:
    """Why `task` is not done yet, judged from the dialogue since message `since` (None: done)."""
    if task.steps:  # a gold plan: execution-grounded
        if state is not None and gold_state is not None and state != gold_state:
            return "a requested change has not been made in the database yet"
        said = assistant_text(messages, since)
        missing = missing_fact(task, said)
        if missing:
            return f"the assistant has not yet told you the {missing}"
        return unexplained_refusal(task, said)
    done = called_tools(messages, since)[1]
    required = rubric_tools(task, available) or []
    todo = [name for name in required if name not in done]
    if todo:
        return f"the assistant has not yet successfully used {', '.join(todo)}"
    if not required and not done:
        return "the assistant has not looked anything up yet"
    return None


def judge(tasks: list[Task], completed: list[bool], messages: list[dict], start: int,
          end_state: str, gold_end_state: str) -> Judgment:
    """Execution-grounded judge for tasks with gold plans."""
    unfinished = [t.id for t, done in zip(tasks, completed) if not done]
    if unfinished:
        return Judgment(False, "incomplete_task", f"the user did not accept tasks {unfinished}")
    if end_state != gold_end_state:
        return Judgment(False, "end_state_mismatch", "database end state differs from the gold plans' end state")
    said = assistant_text(messages, start)
    for task in tasks:
        missing = missing_fact(task, said)
        if missing:
            return Judgment(False, "missing_fact", f"{task.id}: never stated {missing}")
        refusal = unexplained_refusal(task, said)
        if refusal:
            return Judgment(False, "refusal_not_explained", f"{task.id}: {refusal}")
    n_facts = sum(len(st.report) for t in tasks for st in t.subtasks)
    return Judgment(True, "ok", f"end state matches the gold plans; all {n_facts} required facts were stated")
