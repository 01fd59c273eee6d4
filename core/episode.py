"""The episode loop shared by generation and evaluation: user <-> assistant <-> tools <-> database.

Roles only see an `EpisodeState`. Rule-based roles may also exchange structured dialogue acts (the
classic agenda-based simulation setup: a user emits acts plus their surface text); LLM roles read the
text. Tool errors are tool messages, never exceptions; a role that breaks the protocol ends the
episode with an `EpisodeError` whose reason is counted by the caller. Every message is recorded as
standard JSON in UTF-8 (a message that is not: `unencodable_message`), and the dialogue's JSON stays
under `max_dialogue_bytes` (`dialogue_too_large`). An assistant's reasoning (a thinking model's
`reasoning_content`) is recorded on its message and read by nothing here: no role, judge or transcript.
An assistant turn that is context, not a training target (a deliberate slip), is recorded with `"weight": 0`
(the OpenAI fine-tuning format's per-message weight; absent means 1).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Protocol

from toolturn.core.sqlenv import ToolResult


class EpisodeError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class UserTurn:
    text: str | None  # None: end without a closing message
    done: bool
    acts: list[dict] = field(default_factory=list)


@dataclass
class AssistantTurn:
    content: str
    tool_calls: list[dict] = field(default_factory=list)  # [{"name": str, "arguments": dict}]
    acts: list[dict] = field(default_factory=list)
    reasoning: str | None = None  # the model's reasoning_content, when it returned one
    context: bool = False  # deliberately wrong (a slip): recorded with weight 0, shown to a model but never its target


@dataclass
class EpisodeState:
    messages: list[dict]
    tools: list[dict]
    start: int  # index of the first message this episode produced (after system prompt and prefix)
    user_acts: list[dict] = field(default_factory=list)
    assistant_acts: list[dict] = field(default_factory=list)
    user_turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    bytes: int = 0  # UTF-8 JSON size of the messages so far (kept by run_episode)


class User(Protocol):
    async def respond(self, state: EpisodeState) -> UserTurn: ...


class Assistant(Protocol):
    async def respond(self, state: EpisodeState) -> AssistantTurn: ...


class ToolExecutor(Protocol):
    """Executes a call: the SQL sandbox synchronously, the LLM tool simulator as a coroutine. A synchronous
    executor may also offer `try_call(name, arguments) -> ToolResult | None`: the call if it is quick, on the
    caller's thread, else None with nothing done (`Sandbox.try_call`)."""
    def call(self, name: str, arguments: Any) -> ToolResult | Awaitable[ToolResult]: ...


async def execute(tools: ToolExecutor, name: str, arguments: Any) -> ToolResult:
    """One tool call. A synchronous executor (the SQL sandbox) runs on the loop's thread when its `try_call`
    finishes within a small budget, else in a worker thread, so that a call that runs up to its time limit
    holds up only its own dialogue, never the event loop and the others (a sandbox closed meanwhile by a
    cancelled dialogue waits for the call, `Sandbox.close`)."""
    if inspect.iscoroutinefunction(tools.call):
        return await tools.call(name, arguments)
    try_call = getattr(tools, "try_call", None)
    if try_call is not None and (quick := try_call(name, arguments)) is not None:
        return quick
    result = await asyncio.to_thread(tools.call, name, arguments)
    return await result if inspect.isawaitable(result) else result


MAX_DIALOGUE_BYTES = 2 * 1024 * 1024


_MESSAGE_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # json.dumps with these, built once


def message_bytes(message: dict) -> int:
    try:
        text = _MESSAGE_JSON.encode(message)
        return len(text) if text.isascii() else len(text.encode("utf-8"))
    except (ValueError, TypeError) as exc:  # NaN, a lone surrogate, a value JSON cannot hold
        raise EpisodeError("unencodable_message", f"a {message.get('role')} message is not JSON in UTF-8: "
                                                  f"{str(exc)[:120]!r}") from None


def tool_name(name: Any) -> str:
    """What a tool call's name is recorded (and executed) as: a string, whatever the assistant sent."""
    return name if isinstance(name, str) else repr(name)


async def run_episode(state: EpisodeState, user: User, assistant: Assistant, tools: ToolExecutor,
                      max_messages: int = 400, max_steps_per_turn: int = 32,
                      max_dialogue_bytes: int = MAX_DIALOGUE_BYTES) -> None:
    """Alternate user and assistant turns until the user is done; mutates `state.messages`."""
    state.bytes = sum(message_bytes(m) for m in state.messages)

    def append(message: dict) -> None:
        state.bytes += message_bytes(message)
        if state.bytes > max_dialogue_bytes:
            raise EpisodeError("dialogue_too_large", f"dialogue exceeded {max_dialogue_bytes} bytes")
        state.messages.append(message)

    while True:
        turn = await user.respond(state)
        if turn.text:
            append({"role": "user", "content": turn.text})
            state.user_turns += 1
        state.user_acts = turn.acts
        if turn.done:
            return
        for _ in range(max_steps_per_turn):
            reply = await assistant.respond(state)
            message: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if reply.reasoning and reply.reasoning.strip():
                message["reasoning_content"] = reply.reasoning
            if reply.context:
                message["weight"] = 0
            if not reply.tool_calls:
                append(message)
                state.assistant_acts = reply.acts
                break
            calls = []
            for call in reply.tool_calls:
                state.tool_calls += 1
                calls.append({"id": f"call_{state.tool_calls}", "type": "function",
                              "function": {"name": tool_name(call.get("name")), "arguments": call.get("arguments")}})
            message["tool_calls"] = calls
            append(message)
            for call in calls:
                result = await execute(tools, call["function"]["name"], call["function"]["arguments"])
                state.tool_errors += not result.ok
                append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                        "content": result.content})
        else:
            raise EpisodeError("max_steps_per_turn", f"assistant made {max_steps_per_turn} tool calls in one turn")
        if len(state.messages) - state.start > max_messages:
            raise EpisodeError("max_messages", f"dialogue exceeded {max_messages} messages")
