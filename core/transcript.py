"""Plain-text views of a dialogue for the LLM roles that read it (judge, user and tool simulators).

They show what was said and done, never an assistant's `reasoning_content`: the user and the judge must
judge the dialogue as the customer saw it."""

from __future__ import annotations

import json

TOOL_RESULT_CHARS = 600


def render_transcript(messages: list[dict], start: int = 0, tool_chars: int = TOOL_RESULT_CHARS) -> str:
    """Plain-text view of a dialogue, tool calls and results included (for the judge and simulators)."""
    lines = []
    for m in messages[start:]:
        if m["role"] == "user":
            lines.append(f"USER: {m['content']}")
        elif m["role"] == "assistant":
            for call in m.get("tool_calls") or []:
                args = call["function"]["arguments"]
                lines.append(f"ASSISTANT CALLS {call['function']['name']}"
                             f"({args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})")
            if m.get("content"):
                lines.append(f"ASSISTANT: {m['content']}")
        elif m["role"] == "tool":
            lines.append(f"TOOL RESULT ({m.get('name', '')}): {m['content'][:tool_chars]}")
    return "\n".join(lines)
