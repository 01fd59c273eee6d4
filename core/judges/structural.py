"""Deterministic structural checks: the paper's Critical rubric items that need no judgement.

They run on every dialogue before any other judge (rule or LLM), so that a judge cannot keep a
dialogue in which the assistant never used a tool, a tool call went unanswered, or the assistant
invented a result. Each failure has a named reason, counted as a drop in `stats.json`:

- `unanswered_tool_call` / `orphan_tool_result`: every assistant tool call is answered by exactly one
  tool message with its id and name, right after the calling message, and no tool message answers
  nothing;
- `required_tool_not_called`: every task's required tools were called at least once without error
  (a gold plan's steps, except those expected to fail, which must still be called; an LLM-written
  task's tools named in its rubric, or else at least one successful call);
- `no_final_reply`: an assistant reply in text follows the last tool result;
- `ungrounded_argument`: a tool call uses an identifier (a number, or a string that is not free
  text, for a parameter without a default or enum) that appeared nowhere before it: not in any user
  turn, tool result or earlier call (the turn-level check for hallucinated ids, as in recent
  tool-use datasets).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from toolturn.core.judges.facts import mentions
from toolturn.core.tasks.types import Task

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IDENTIFIER_MAX_LEN = 40  # longer strings are free text (names, notes), not identifiers


@dataclass(frozen=True)
class Problem:
    reason: str
    detail: str


def is_error(content: str) -> bool:
    try:
        value = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(value, dict) and set(value) == {"error"}


def _calls_answered(messages: list[dict], start: int) -> Problem | None:
    i = start
    while i < len(messages):
        m = messages[i]
        if m["role"] == "tool":
            return Problem("orphan_tool_result", f"message {i}: a tool result that answers no call")
        calls = m.get("tool_calls") or [] if m["role"] == "assistant" else []
        for k, call in enumerate(calls, start=1):
            answer = messages[i + k] if i + k < len(messages) else None
            if answer is None or answer["role"] != "tool" or answer.get("tool_call_id") != call["id"] \
                    or answer.get("name") != call["function"]["name"]:
                return Problem("unanswered_tool_call", f"message {i}: call {call['id']} "
                                                       f"({call['function']['name']}) has no matching result")
        i += 1 + len(calls)
    return None


def rubric_tools(task: Task, available: set[str]) -> list[str]:
    """Tool names that an LLM-written rubric's expected tool-use patterns mention."""
    words = set(IDENTIFIER.findall(" ".join((task.rubric_spec or {}).get("tool_patterns", []))))
    return sorted(words & available)


def called_tools(messages: list[dict], start: int) -> tuple[set[str], set[str]]:
    """(tools called at all, tools called with a non-error result) since `start`."""
    called, ok = set(), set()
    for m in messages[start:]:
        if m["role"] == "tool":
            called.add(m.get("name", ""))
            if not is_error(m.get("content") or ""):
                ok.add(m.get("name", ""))
    return called, ok


def required_tools(task: Task, rubric_tools: list[str]) -> tuple[set[str], set[str]]:
    """(tools that must succeed, tools that must merely be called) for one task."""
    if task.steps:
        must_fail = {s.tool for s in task.steps if s.expect_error}
        return {s.tool for s in task.steps if not s.expect_error}, must_fail
    return set(rubric_tools), set()


def _identifiers(args: Any, properties: dict) -> list[Any]:
    """The argument values that must come from the dialogue: not a parameter's default or enum member
    (the tool list offers those), not booleans, not free text."""
    out = []
    for name, v in (args.items() if isinstance(args, dict) else []):
        spec = properties.get(name) if isinstance(properties.get(name), dict) else {}
        if "default" in spec or "enum" in spec or isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)) or (isinstance(v, str) and 0 < len(v) <= IDENTIFIER_MAX_LEN
                                           and " " not in v.strip()):
            out.append(v)
    return out


def _grounded(messages: list[dict], start: int, properties: dict[str, dict]) -> Problem | None:
    seen: list[str] = []  # text the assistant had seen before each call
    for i, m in enumerate(messages):
        if i >= start and m["role"] == "assistant" and m.get("tool_calls"):
            text = "\n".join(seen)
            for call in m["tool_calls"]:
                name = call["function"]["name"]
                for value in _identifiers(call["function"]["arguments"], properties.get(name, {})):
                    if not mentions(text, value):
                        return Problem("ungrounded_argument", f"message {i}: {name} uses {value!r}, which "
                                                              f"appeared nowhere before the call")
        if m["role"] in ("user", "tool"):
            seen.append(m.get("content") or "")
        elif m["role"] == "assistant":
            seen.append(m.get("content") or "")
            seen.extend(json.dumps(c["function"]["arguments"], ensure_ascii=False) for c in m.get("tool_calls") or [])
    return None


def check_structure(tasks: list[Task], messages: list[dict], start: int, tools: list[dict]) -> Problem | None:
    """The first structural problem of the dialogue since message `start` (None: it passes);
    `tools`: the OpenAI function schemas the dialogue offered."""
    available = {t["function"]["name"] for t in tools}
    properties = {t["function"]["name"]: t["function"].get("parameters", {}).get("properties", {}) for t in tools}
    problem = _calls_answered(messages, start)
    if problem:
        return problem
    called, ok = called_tools(messages, start)
    for task in tasks:
        succeed, attempt = required_tools(task, rubric_tools(task, available))
        missing = sorted((succeed - ok) | (attempt - called))
        if missing:
            return Problem("required_tool_not_called", f"{task.id}: {', '.join(missing)} never called successfully")
        if not task.steps and not succeed and not ok:
            return Problem("required_tool_not_called", f"{task.id}: no tool was called successfully")
    last_result = max((i for i, m in enumerate(messages) if m["role"] == "tool" and i >= start), default=start)
    if not any(m["role"] == "assistant" and not m.get("tool_calls") and (m.get("content") or "").strip()
               for m in messages[last_result:]):
        return Problem("no_final_reply", "no assistant reply in text follows the last tool result")
    return _grounded(messages, start, properties)
