"""The assistant as a prompted LLM under the domain policy, calling tools through the chat API.

An empty or truncated reply is retried once, then ends the dialogue with a counted reason. A thinking
model's reasoning (`reasoning_content`) goes into the record with the reply it led to.
"""

from __future__ import annotations

from toolturn.core.episode import AssistantTurn, EpisodeError, EpisodeState
from toolturn.core.role_model import RoleModel


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
                return AssistantTurn(result.content, reasoning=result.reasoning_content)
            self.model.meter.events["assistant_retried"] += 1
        else:
            raise EpisodeError("assistant_truncated" if result.finish_reason == "length" else "assistant_empty_reply")
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in result.tool_calls]
        return AssistantTurn(result.content, calls, reasoning=result.reasoning_content)
