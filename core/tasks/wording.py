"""A task in words: the clause that asks for one subtask, and the declarative goal of a whole task.

The rule-based user speaks these clauses; the LLM roles read the goal. Values are written with
`format_value`, the same function the judges use to check that a fact was stated.
"""

from __future__ import annotations

from toolturn.core.tasks.types import Subtask, Task, format_value

V = format_value


def slot_label(slot: str, entity: str) -> str:
    """'customer email' -> 'email' when the entity is already named in the sentence."""
    return slot[len(entity) + 1:] if slot.startswith(entity + " ") else slot


def _fields(st: Subtask) -> str:
    labels = [r.label for r in st.report]
    return " and ".join(labels) if labels else "details"


def _service(st: Subtask, task: Task, reveal_ids: bool) -> str:
    """A customer's request in their words; the identifiers they know follow only when revealed."""
    ids = [f"my {s} is {V(task.facts[s])}" for s in st.id_slots if s in task.facts]
    return st.detail["say"] + (f" ({'; '.join(ids)})" if reveal_ids and ids else "")


def clause(st: Subtask, task: Task, reveal_ids: bool) -> str:
    """The verb phrase asking for one subtask; identifiers are included only when revealed."""
    if st.kind in ("service", "refuse"):
        return _service(st, task, reveal_ids)
    e = st.entity
    ids = ", ".join(f"{slot_label(s, e)} {V(task.facts[s])}" for s in st.id_slots)
    who = f"the {e} with {ids}" if reveal_ids and ids else f"my {e}"
    values = ", ".join(f"{slot_label(s, 'new')} {V(task.facts[s])}".replace(" for the new record", "")
                       for s in st.value_slots)
    d = st.detail
    return {
        "lookup": lambda: f"tell me the {_fields(st)} of {who}",
        "find": lambda: f"find {who} and tell me its {_fields(st)}",
        "missing": lambda: f"look up {who}",
        "summary": lambda: f"tell me how many {e} records have {d.get('group')} {V(d.get('value'))}",
        "parent": lambda: f"tell me the {_fields(st)} of the {e} linked to {d.get('of', 'it')}",
        "related": lambda: f"list the {e} linked to it",
        "update": lambda: f"change the {d.get('field')} of {e} {d.get('key')} to {values}",
        "create": lambda: f"add a new {e} for it with {values}",
        "delete": lambda: f"delete {e} {d.get('key')}",
        "verify": lambda: (f"check {e} {d['key']} again and tell me the {d['field']} now" if "field" in d
                           else f"tell me how many {e} records it has now"),
    }[st.kind]()


def describe_goal(task: Task) -> str:
    """Declarative statement of the user's objective: what they know, what must be looked up (or
    changed) with tools, and what must be communicated back."""
    parts = [clause(st, task, reveal_ids=True) for st in task.subtasks]
    known = ", ".join(f"{s} = {V(v)}" for s, v in task.facts.items())
    tools = ", ".join(dict.fromkeys(s.tool for s in task.steps))
    told = ", ".join(dict.fromkeys(r.label for st in task.subtasks for r in st.report))
    refusals = "" if not any(st.kind == "refuse" for st in task.subtasks) else (
        " The policy may not allow part of this: accept the assistant's explanation if it refuses.")
    withheld = [s for st in task.subtasks for s in st.detail.get("withhold", [])]
    private = f" You do not want to give your {', '.join(withheld)}." if withheld else ""
    return (f"You want the assistant to {'; then '.join(parts)}. You know: {known or 'nothing specific'}.{private} "
            f"To be looked up or changed with tools: {tools or 'nothing'}. To be told back: {told or 'the outcome'}."
            f"{refusals}")
