"""The adaptive in-flight limit, driven by outcomes (never by a clock), and the client against a server that
answers 429 above a hidden concurrency: the limit comes down, no request is lost, the maximum is never passed."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from mock_openai import Fault, MockServer, completion
from toolturn.core.adaptive_limit import AdaptiveLimit
from toolturn.core.llm import Endpoint, LLMClient

MSGS = [{"role": "user", "content": "hi"}]


def test_one_cut_per_congestion_episode_then_additive_growth(caplog):
    limit = AdaptiveLimit(10, minimum=2, name="e")
    old = [limit.sent(10) for _ in range(3)]  # three requests out when the first 429 comes back
    with caplog.at_level(logging.INFO, "toolturn.llm"):
        assert limit.congested(old[0], "rate limited") is True
        assert [limit.congested(t, "rate limited") for t in old[1:]] == [False, False]  # same episode
    assert limit.current() == 8 and limit.decreases == 1
    assert "concurrency limit 10 -> 8 (rate limited)" in caplog.text
    # growth: about +1 per round of `limit` saturated successes, none while the limit is not in use
    for _ in range(9):
        limit.succeeded(limit.sent(8))
    assert limit.current() == 9
    for _ in range(20):
        limit.succeeded(limit.sent(1))  # one request in flight: the limit is not what holds the load
    assert limit.current() == 9
    for _ in range(100):
        limit.succeeded(limit.sent(limit.current()))
    assert limit.current() == 10 and limit.value == 10.0  # never above the maximum


def test_floor_and_fixed_mode():
    limit = AdaptiveLimit(4, minimum=2)
    for _ in range(5):
        limit.congested(limit.sent(4), "timeout")
    assert limit.current() == 2 and limit.decreases == 2 and not limit.above_minimum()
    fixed = AdaptiveLimit(4, adaptive=False)
    assert fixed.congested(fixed.sent(4), "rate limited") is False and fixed.current() == 4
    with pytest.raises(ValueError, match="min_concurrency"):
        AdaptiveLimit(2, minimum=3)


def test_rising_latency_per_token_cuts_when_tolerance_is_set():
    limit = AdaptiveLimit(16, latency_tolerance=2.0)
    for _ in range(5):
        limit.succeeded(limit.sent(16), latency_s=1.0, completion_tokens=100)  # 10 ms a token
    assert limit.current() == 16
    for _ in range(10):
        limit.succeeded(limit.sent(16), latency_s=5.0, completion_tokens=100)  # 50 ms a token
    assert limit.current() < 16 and limit.decreases >= 1
    off = AdaptiveLimit(16)
    for latency in (1.0, 50.0, 50.0):
        off.succeeded(off.sent(16), latency_s=latency, completion_tokens=1)
    assert off.current() == 16


class HiddenLimit:
    """Answers 429 when more than `capacity` requests are in flight. The first requests wait until one was
    refused, so that the client's burst is seen whatever the machine's speed."""

    def __init__(self, capacity: int):
        self.capacity, self.server = capacity, None
        self.refused = threading.Event()
        self.answered = 0

    async def __call__(self, request: dict):
        if self.server.in_flight > self.capacity:
            self.refused.set()
            return Fault.status(429)
        while not self.refused.is_set():
            await asyncio.sleep(0.005)
        self.answered += 1
        return completion("ok")


def test_429s_above_a_hidden_concurrency_lower_the_limit_and_lose_nothing():
    handler = HiddenLimit(3)
    with MockServer(handler) as server:
        handler.server = server

        async def go():
            endpoint = Endpoint(server.base_url, "mock", max_concurrency=12, max_retries=0, backoff_s=0.001)
            async with LLMClient(endpoint) as client:
                results = await asyncio.gather(*(client.chat(MSGS) for _ in range(40)))
                return results, client

        results, client = asyncio.run(go())
    # max_retries=0: every 429 was retried for free while the limit came down, none dropped a request
    assert [r.content for r in results] == ["ok"] * 40 and handler.answered == 40 and client.failures == 0
    assert client.limit.decreases >= 1 and client.limit.lowest < 12 and client.limit.current() <= 12
    assert client.stats()["concurrency"]["decreases"] == client.limit.decreases
