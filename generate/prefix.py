"""Start from any state: load existing OpenAI-format conversations to continue with new tool-use tasks."""

from __future__ import annotations

import json
from pathlib import Path

from toolturn.core.errors import ToolturnError

ROLES = {"system", "user", "assistant", "tool"}


def _check_message(m, where: str) -> None:
    if not isinstance(m, dict):
        raise ToolturnError(f"{where}: a message must be an object, got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise ToolturnError(f"{where}: invalid role {role!r} (expected one of {sorted(ROLES)})")
    content = m.get("content")
    if content is not None and not isinstance(content, str):
        raise ToolturnError(f"{where}: 'content' must be a string or null")
    if role != "assistant" and content is None:
        raise ToolturnError(f"{where}: a {role} message needs 'content'")
    for call in m.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if role != "assistant" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ToolturnError(f"{where}: malformed tool_calls entry")
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise ToolturnError(f"{where}: a tool message needs 'tool_call_id'")


def load_prefixes(path: str | Path) -> list[list[dict]]:
    """Each line: {"messages": [...]} or a bare list of messages. Errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise ToolturnError(f"prefix file not found: {path}")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ToolturnError(f"{where}: not valid JSON ({exc.msg})") from None
        messages = row.get("messages") if isinstance(row, dict) else row
        if not isinstance(messages, list) or not messages:
            raise ToolturnError(f"{where}: expected a non-empty list of messages or {{\"messages\": [...]}}")
        for i, m in enumerate(messages):
            _check_message(m, f"{where}, message {i}")
        if any(m["role"] == "system" for m in messages[1:]):
            raise ToolturnError(f"{where}: a system message may only come first")
        if messages[-1].get("tool_calls"):
            raise ToolturnError(f"{where}: the conversation ends with an unanswered tool call")
        out.append(messages)
    if not out:
        raise ToolturnError(f"prefix file {path} holds no conversations")
    return out
