"""Task and plan types shared by generation and evaluation.

A plan step's arguments are JSON values in which two markers are resolved at run time:
`{"$fact": slot}` is something the user knows and must say; `{"$ref": [step, key, ...]}` is a value
read out of an earlier step's result (a key may be `{"$match": {field: value}}` to pick a list item,
`"$len"` for a list's length, or `{"$pluck": field}` for that field of every list item).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DIFFICULTIES = ("easy", "medium", "hard")  # 1 step; 2-3 dependent steps; 4+ steps with writes


@dataclass
class PlanStep:
    tool: str
    args: dict[str, Any]
    expect_error: bool = False


@dataclass
class ReportItem:
    label: str
    path: list | None  # a $ref path into the plan's results; None when `expected` is a literal
    expected: Any = None  # the value the gold execution produced


@dataclass
class Subtask:
    kind: str  # lookup | find | missing | summary | parent | related | update | create | delete | verify
    entity: str
    steps: list[int]
    id_slots: list[str] = field(default_factory=list)  # identifiers the user may withhold until asked
    value_slots: list[str] = field(default_factory=list)  # values the user states with the request
    report: list[ReportItem] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # template-specific wording inputs


@dataclass
class Task:
    id: str
    domain: str
    difficulty: str  # easy | medium | hard
    template: str
    goal: str  # declarative statement of the user's objective
    steps: list[PlanStep]
    subtasks: list[Subtask]
    facts: dict[str, Any]  # slot -> value the user knows
    rubric_spec: dict | None = None  # LLM-written tasks: {success_criteria, tool_patterns, checkpoints}

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(**{**d,
                      "steps": [PlanStep(**s) for s in d["steps"]],
                      "subtasks": [Subtask(**{**s, "report": [ReportItem(**r) for r in s["report"]]})
                                   for s in d["subtasks"]]})

    def rubric(self) -> list[str]:
        """Human-readable success criteria (the execution-grounded judge checks them)."""
        if self.rubric_spec:
            return [f"{kind.replace('_', ' ')}: {item}" for kind in ("success_criteria", "tool_patterns", "checkpoints")
                    for item in self.rubric_spec.get(kind, [])]
        items = [f"call {s.tool}" + (" (expected to fail)" if s.expect_error else "") for s in self.steps]
        items += [f"state {r.label}: {format_value(r.expected)}" for st in self.subtasks for r in st.report]
        return items


_ATOMS = (str, int, float, bool, type(None))
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in (PlanStep, ReportItem, Subtask, Task)}


@dataclass
class _Box:
    value: Any


def _plain(value: Any) -> Any:
    """`dataclasses.asdict`'s deep copy, without its generic dispatch on the JSON values and the task types that
    make up a task (a kept record carries every task's copy); any other value goes through asdict itself."""
    cls = type(value)
    if cls in _ATOMS:
        return value
    if cls is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if cls is list:
        return [_plain(v) for v in value]
    if cls in _FIELDS:
        return {name: _plain(getattr(value, name)) for name in _FIELDS[cls]}
    return asdict(_Box(value))["value"]


def format_value(value: Any) -> str:
    """The one way values are written in text; the judge and the user simulator search for this string."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def resolve(value: Any, facts: dict[str, Any], results: list[Any]) -> Any:
    """Replace $fact / $ref markers in a plan argument."""
    if isinstance(value, dict) and set(value) == {"$fact"}:
        return facts[value["$fact"]]
    if isinstance(value, dict) and set(value) == {"$ref"}:
        return lookup(results, value["$ref"])
    return value


def lookup(results: list[Any], path: list) -> Any:
    node: Any = results
    for key in path:
        if key == "$len":
            node = len(node)
        elif isinstance(key, dict) and "$pluck" in key:
            node = [item[key["$pluck"]] for item in node]
        elif isinstance(key, dict) and "$match" in key:
            want = key["$match"]
            node = next((item for item in node if all(item.get(k) == v for k, v in want.items())), None)
            if node is None:
                raise LookupError(f"no result item matches {want}")
        else:
            node = node[key]
    return node


def resolve_args(step: PlanStep, facts: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    return {k: resolve(v, facts, results) for k, v in step.args.items()}
