"""An LLM playing one role: its endpoint client, its sampling settings and the dialogue's meter."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from toolturn.core.episode import EpisodeError
from toolturn.core.llm import ChatResult, LLMClient, Sampling, chat_json
from toolturn.core.llm_cache import CacheScope


@dataclass
class Meter:
    """Per-dialogue accounting across all roles."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    events: Counter = field(default_factory=Counter)  # repairs, retries, guard interventions, ...
    cache_scope: CacheScope | None = None  # numbers the dialogue's requests for the response cache


class RoleModel:
    """One role's handle on an LLM: endpoint client, sampling, and the dialogue's meter."""

    def __init__(self, role: str, client: LLMClient, sampling: Sampling, meter: Meter):
        self.role, self.client, self.sampling, self.meter = role, client, sampling, meter

    def _count(self, result: ChatResult) -> None:
        self.meter.calls += 1
        self.meter.prompt_tokens += result.prompt_tokens
        self.meter.completion_tokens += result.completion_tokens

    async def chat(self, messages: list[dict], tools: list[dict] | None = None) -> ChatResult:
        result = await self.client.chat(messages, tools=tools, sampling=self.sampling,
                                        cache_scope=self.meter.cache_scope)
        self._count(result)
        return result

    async def json(self, messages: list[dict], required: dict[str, type]) -> dict:
        usage: dict = {}
        obj, status = await chat_json(self.client, messages, required=required, sampling=self.sampling, usage=usage,
                                      cache_scope=self.meter.cache_scope)
        self.meter.calls += usage.get("calls", 0)
        self.meter.prompt_tokens += usage.get("prompt_tokens", 0)
        self.meter.completion_tokens += usage.get("completion_tokens", 0)
        if obj is None:
            raise EpisodeError(f"{self.role}_json", status)
        if status == "repaired":
            self.meter.events[f"{self.role}_json_repaired"] += 1
        return obj
