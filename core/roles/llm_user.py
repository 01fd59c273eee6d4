"""The paper's user simulator: a prompted LLM replying with {user_message, is_task_complete} JSON.

A reply that breaks the protocol is repaired once, then ends the dialogue with a counted reason.
"""

from __future__ import annotations

import json
from typing import Callable

from toolturn.core.episode import EpisodeError, EpisodeState, UserTurn
from toolturn.core.prompts import load as load_prompt
from toolturn.core.role_model import RoleModel
from toolturn.core.tasks.types import Task, format_value
from toolturn.core.transcript import TOOL_RESULT_CHARS

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


_REPLY_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False), built once


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
                out.append({"role": "assistant", "content": _REPLY_JSON.encode(
                    {"user_message": m["content"], "is_task_complete": False})})
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
