"""The prompted LLM roles: user simulator, assistant and judge (the paper's method).

Every role talks to its own endpoint through `RoleModel`, which also meters tokens per dialogue.
Replies that break the protocol are repaired once (JSON roles) or retried once (assistant), then end
the dialogue with a counted reason; nothing partial is ever written as complete.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from toolturn.core.episode import AssistantTurn, EpisodeError, EpisodeState, UserTurn
from toolturn.core.llm import ChatResult, LLMClient, Sampling, chat_json
from toolturn.core.types import Task, format_value
from toolturn.generate.prompts import load as load_prompt

TOOL_RESULT_CHARS = 600

# One worked exchange before the real one: small models follow a JSON protocol from a demonstration far
# more reliably than from instructions alone (SmolLM2-135M: almost never without it, usually with it).
AGENT = "Assistant: "  # prefixes the agent's turns in the simulator's view: who is talking stays explicit
GREETING = AGENT + "Hello! How can I help you today?"
USER_SHOTS = [
    {"role": "user", "content": GREETING},
    {"role": "assistant", "content": '{"user_message": "Hi, could you tell me the status of order 3?", '
                                     '"is_task_complete": false}'},
    {"role": "user", "content": AGENT + "Order 3 has the status shipped."},
    {"role": "assistant", "content": '{"user_message": "Great, thanks. That is all.", "is_task_complete": true}'},
]
JUDGE_SHOT_REPLY = '{"judgment": "invalid", "reasoning": "The order status was never looked up with a tool."}'


@dataclass
class Meter:
    """Per-dialogue accounting across all roles."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    events: Counter = field(default_factory=Counter)  # repairs, retries, guard interventions, ...


class RoleModel:
    """One role's handle on an LLM: endpoint client, sampling, and the dialogue's meter."""

    def __init__(self, role: str, client: LLMClient, sampling: Sampling, meter: Meter):
        self.role, self.client, self.sampling, self.meter = role, client, sampling, meter

    def _count(self, result: ChatResult) -> None:
        self.meter.calls += 1
        self.meter.prompt_tokens += result.prompt_tokens
        self.meter.completion_tokens += result.completion_tokens

    async def chat(self, messages: list[dict], tools: list[dict] | None = None) -> ChatResult:
        result = await self.client.chat(messages, tools=tools, sampling=self.sampling)
        self._count(result)
        return result

    async def json(self, messages: list[dict], required: dict[str, type]) -> dict:
        usage: dict = {}
        obj, status = await chat_json(self.client, messages, required=required, sampling=self.sampling, usage=usage)
        self.meter.calls += usage.get("calls", 0)
        self.meter.prompt_tokens += usage.get("prompt_tokens", 0)
        self.meter.completion_tokens += usage.get("completion_tokens", 0)
        if obj is None:
            raise EpisodeError(f"{self.role}_json", status)
        if status == "repaired":
            self.meter.events[f"{self.role}_json_repaired"] += 1
        return obj


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


def _facts_text(task: Task) -> str:
    return "\n".join(f"- {slot}: {format_value(v)}" for slot, v in task.facts.items()) or "- (none)"


class LLMUser:
    """The paper's user simulator. Each task is pursued in turn; `is_task_complete` is accepted only
    when `check(task_index)` (the judge's own completion check) passes, which catches the known
    failure of stopping right after the assistant merely *proposes* an action."""

    def __init__(self, model: RoleModel, tasks: list[Task], task_oriented: bool,
                 check: Callable[[int, int], str | None], prompt: str = "user_simulator"):
        self.model, self.tasks, self.task_oriented, self.check = model, tasks, task_oriented, check
        self.prompt = prompt
        self.k = 0  # current task
        self.task_start = 0  # message index where the current task began
        self.spoke = False
        self._completed = [False] * len(tasks)

    def completed(self, i: int) -> bool:
        return self._completed[i]

    def _system(self, note: str = "") -> dict:
        task = self.tasks[self.k]
        text = load_prompt(self.prompt).format(goal=task.goal, facts=_facts_text(task))
        if self.task_oriented:
            text += ("\n\nIn this conversation, state your whole request at once in your first message, with "
                     "every detail the assistant needs.")
        if self.k > 0:
            text += ("\n\nYou already finished an earlier request in this conversation. Move on to the goal "
                     "above, linking it naturally to what came before.")
        return {"role": "system", "content": text + (f"\n\nNote: {note}" if note else "")}

    def _view(self, state: EpisodeState) -> list[dict]:
        """The dialogue from the simulator's side: its own turns are 'assistant', the agent's 'user'."""
        out, pending = [], []
        for m in state.messages[state.start:]:
            if m["role"] == "user":
                if pending:
                    out.append({"role": "user", "content": AGENT + "\n".join(pending)})
                    pending = []
                out.append({"role": "assistant", "content": json.dumps(
                    {"user_message": m["content"], "is_task_complete": False}, ensure_ascii=False)})
            elif m["role"] == "assistant" and m.get("content"):
                pending.append(m["content"])
            elif m["role"] == "tool":
                pending.append(f"[tool {m.get('name', '')} returned: {m['content'][:TOOL_RESULT_CHARS]}]")
        if pending:
            out.append({"role": "user", "content": AGENT + "\n".join(pending)})
        if not out:
            out.append({"role": "user", "content": GREETING})
        elif out[-1]["role"] != "user":  # e.g. the next task starts right after the previous one was accepted
            out.append({"role": "user", "content": AGENT + "Is there anything else I can help you with?"})
        return out

    async def _ask(self, state: EpisodeState, note: str = "") -> dict:
        obj = await self.model.json([self._system(note), *USER_SHOTS, *self._view(state)],
                                    required={"user_message": str, "is_task_complete": bool})
        if not obj["user_message"].strip() and not obj["is_task_complete"]:
            raise EpisodeError("user_json", "empty user_message")
        return obj

    async def respond(self, state: EpisodeState) -> UserTurn:
        if self.task_oriented and self.spoke:  # the paper's task-oriented pipeline: one request, one answer,
            self._completed[self.k] = True     # and the judge alone decides whether it is valid
            return UserTurn(None, True)
        obj = await self._ask(state)
        if obj["is_task_complete"] and self.spoke:
            problem = self.check(self.k, self.task_start)
            if problem:
                self.model.meter.events["premature_completion_caught"] += 1
                obj = await self._ask(state, note=f"Not everything is done yet: {problem}. Continue the "
                                                  f"conversation; do not end it yet.")
                if obj["is_task_complete"]:
                    raise EpisodeError("premature_completion", problem)
            else:
                self._completed[self.k] = True
                if self.k + 1 < len(self.tasks):
                    self.k, self.task_start = self.k + 1, len(state.messages)
                    obj = await self._ask(state)
                    return UserTurn(obj["user_message"], False)
                return UserTurn(obj["user_message"] or None, True)
        self.spoke = True
        return UserTurn(obj["user_message"], False)


class LLMAssistant:
    """The assistant under the domain policy, calling tools through the chat API."""

    def __init__(self, model: RoleModel):
        self.model = model

    async def respond(self, state: EpisodeState) -> AssistantTurn:
        for attempt in range(2):
            result = await self.model.chat(state.messages, tools=state.tools)
            if result.tool_calls:
                break
            if result.content.strip() and result.finish_reason != "length":
                return AssistantTurn(result.content)
            self.model.meter.events["assistant_retried"] += 1
        else:
            raise EpisodeError("assistant_truncated" if result.finish_reason == "length" else "assistant_empty_reply")
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in result.tool_calls]
        return AssistantTurn(result.content, calls)


async def llm_judge(model: RoleModel, tasks: list[Task], messages: list[dict], start: int,
                    tools: list[dict]) -> tuple[bool, str]:
    """The paper's rubric validator: {judgment, reasoning}; only Critical rubric items are enforced."""
    goal = "\n".join(f"{i + 1}. {t.goal}" for i, t in enumerate(tasks))
    rubric = "\n".join(f"- {item}" for t in tasks for item in t.rubric())
    tool_names = ", ".join(t["function"]["name"] for t in tools)
    prompt = load_prompt("judge").format(goal=goal, rubric=rubric or "- (none)", tools=tool_names,
                                         transcript=render_transcript(messages, start))
    shot = load_prompt("judge").format(goal="1. You want the status of order 3.", rubric="- call get_order",
                                       tools="get_order", transcript="USER: What is the status of order 3?\n"
                                                                     "ASSISTANT: It is probably shipped.")
    obj = await model.json([{"role": "user", "content": shot}, {"role": "assistant", "content": JUDGE_SHOT_REPLY},
                            {"role": "user", "content": prompt}], required={"judgment": str, "reasoning": str})
    judgment = obj["judgment"].strip().lower()
    if judgment not in ("valid", "invalid"):
        raise EpisodeError("judge_json", f"judgment must be valid or invalid, got {obj['judgment'][:40]!r}")
    return judgment == "valid", obj["reasoning"]

