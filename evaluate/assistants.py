"""The assistants an evaluation can face: a served model, the oracle speaking only text, and the
do-nothing assistant whose score is the floor.

A served model's failures are sorted by whose they are: a malformed tool call (the managed
`transformers serve` returns it as text, core/serve_transformers.py, and the client flags it), a reply
the client cannot decode or a request the server refuses as too long is the model's failure on that
turn (counted in `events`); an endpoint that stays down, hangs or errors after the client's retries
is an `InfraError`, which the runner retries and then counts, never scoring it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

from toolturn.core.episode import AssistantTurn, EpisodeState
from toolturn.core.llm import LLMClient, LLMError, Sampling
from toolturn.core.roles.acts import is_affirmation

DO_NOTHING_REPLY = "I'm sorry, I can't help with that right now."


class InfraError(Exception):
    """The endpoint failed (after retries) for reasons that are not the model's: the sample is not scored."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def derive_seed(*parts) -> int:
    """A 31-bit seed that is a pure function of `parts` (a sample's from its task, a request's from its sample)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


class ModelAssistant:
    """A served model under test: every request carries explicit sampling settings and its own seed."""

    def __init__(self, client: LLMClient, sampling: Sampling, sample_seed: int):
        self.client, self.sampling, self.sample_seed = client, sampling, sample_seed
        self.requests = 0
        self.events: Counter = Counter()
        self.prompt_tokens = self.completion_tokens = 0

    async def respond(self, state: EpisodeState) -> AssistantTurn:
        sampling = replace(self.sampling, seed=derive_seed(self.sample_seed, self.requests))
        self.requests += 1
        try:
            result = await self.client.chat(state.messages, tools=state.tools, sampling=sampling)
        except LLMError as exc:
            if exc.fatal:
                raise InfraError(exc.reason, str(exc)) from None
            self.events[f"model_failure_{exc.reason}"] += 1  # model_output, http_400 (too long), reply_too_large
            return AssistantTurn("")
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        if result.finish_reason == "length":
            self.events["truncated_reply"] += 1
        bad = sum("error" in c for c in result.tool_calls)
        if bad:
            self.events["undecodable_tool_call"] += bad
        return AssistantTurn(result.content, [{"name": c["name"], "arguments": c["arguments"]} for c in result.tool_calls])


class TextOnly:
    """Hides a rule-based assistant's dialogue acts, so the user must understand its text. The assistant
    keeps its own memory: after it proposed a change, the user's reply is read (a yes or not, as the
    policy checker reads a confirmation) and handed to it as the affirm/decline act it expects, the
    assistant-side NLU."""

    def __init__(self, inner):
        self.inner, self.proposal = inner, None

    async def respond(self, state: EpisodeState) -> AssistantTurn:
        if self.proposal is not None and state.messages[-1]["role"] == "user":
            p, self.proposal = self.proposal, None
            yes = is_affirmation(state.messages[-1]["content"] or "")
            state.user_acts = [*state.user_acts, {"act": "affirm" if yes else "decline", "task": p["task"],
                                                  "subtask": p["subtask"], "step": p.get("step")}]
        turn = await self.inner.respond(state)
        self.proposal = next((a for a in turn.acts if a.get("act") == "propose"), None)
        return AssistantTurn(turn.content, turn.tool_calls)


class DoNothing:
    """Never calls a tool, never states a fact: the floor every score is read against."""

    async def respond(self, state: EpisodeState) -> AssistantTurn:
        return AssistantTurn(DO_NOTHING_REPLY)
