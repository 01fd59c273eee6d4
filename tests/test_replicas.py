"""Replicas behind one endpoint, against real HTTP mock servers: least-loaded routing under per-replica and
total caps, a dead replica taken out without losing a request, probed and taken back; per-replica stats."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from mock_openai import MockServer, completion, hold_port
from omegaconf import OmegaConf
from toolturn.core.endpoints import Endpoints
from toolturn.core.errors import ToolturnError
from toolturn.core.llm import Endpoint, LLMClient

MSGS = [{"role": "user", "content": "hi"}]


class Held:
    """A handler that holds every request until `release()`; `in_flight` of its server says how many wait."""

    def __init__(self):
        self.open = threading.Event()

    async def __call__(self, request: dict) -> dict:
        while not self.open.is_set():
            await asyncio.sleep(0.005)
        return completion("ok")

    def release(self) -> None:
        self.open.set()


async def until(condition, what: str, timeout: float = 60.0) -> None:
    """Wait on observable state; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def endpoint(urls: list[str], **kw) -> Endpoint:
    return Endpoint(urls[0], "mock", replicas=tuple(urls), timeout_s=10.0, backoff_s=0.01, name="pool", **kw)


def test_least_loaded_routing_under_replica_and_total_caps():
    held = Held()
    with MockServer(held) as a, MockServer(held) as b, MockServer(held) as c:
        servers = (a, b, c)

        async def go():
            async with LLMClient(endpoint([s.base_url for s in servers], max_concurrency=5,
                                          replica_max_concurrency=2)) as client:
                tasks = [asyncio.create_task(client.chat(MSGS)) for _ in range(7)]
                await until(lambda: sum(s.in_flight for s in servers) == 5, "5 requests held")
                spread = sorted(s.in_flight for s in servers)  # total cap 5, at most 2 each
                waiting = client.pool.in_flight, len(client.pool._waiters)
                held.release()
                results = await asyncio.gather(*tasks)
                return spread, waiting, results, client.stats()

        spread, waiting, results, stats = asyncio.run(go())
    assert spread == [1, 2, 2] and waiting == (5, 2)
    assert [r.content for r in results] == ["ok"] * 7
    replicas = stats["replicas"]
    assert sorted(replicas) == sorted(s.base_url for s in servers)
    assert sum(r["requests"] for r in replicas.values()) == 7 and all(r["max_in_flight"] <= 2 for r in replicas.values())
    assert all(r["failures"] == 0 and r["healthy"] for r in replicas.values())


def test_a_dead_replica_is_taken_out_without_losing_requests_then_probed_back():
    port = hold_port()  # keeps b's port: refused while b is down, b comes back at the same address
    a, b = MockServer(lambda r: completion("a")), MockServer(lambda r: completion("b"))
    a.start()
    b.start(port.getsockname()[1])
    try:
        b_url = b.base_url
        b.stop()  # dead before the first request

        async def go():
            async with LLMClient(endpoint([a.base_url, b_url], probe_s=0.05, max_retries=0)) as client:
                first = [await client.chat(MSGS) for _ in range(6)]  # max_retries=0: a moved request costs no retry
                dead = client.stats()["replicas"][b_url]
                b.start(port.getsockname()[1])
                await until(lambda: client.replicas[1].healthy, "the probe takes b back")
                back = [await client.chat(MSGS) for _ in range(4)]
                return first, dead, back, client.stats()["replicas"]

        first, dead, back, replicas = asyncio.run(go())
    finally:
        a.stop()
        b.stop()
        port.close()
    assert [r.content for r in first] == ["a"] * 6  # nothing lost: each failed attempt moved to a
    assert dead["healthy"] is False and dead["ejections"] == 1 and dead["failures"] == 2 and dead["requests"] == 2
    assert "b" in [r.content for r in back] and replicas[b_url]["answered"] >= 1
    assert replicas[b_url]["ejections"] == 1 and replicas[b_url]["healthy"]


def test_all_replicas_down_fails_like_one_url():
    held = [hold_port(), hold_port()]
    urls = [f"http://127.0.0.1:{s.getsockname()[1]}/v1" for s in held]
    try:
        async def go():
            async with LLMClient(endpoint(urls, max_retries=2)) as client:
                with pytest.raises(Exception) as err:
                    await client.chat(MSGS)
                return err.value

        err = asyncio.run(go())
    finally:
        for s in held:
            s.close()
    assert err.reason == "connection" and err.fatal and "gave up after 3 attempts" in str(err)


def test_endpoints_take_a_list_of_base_urls(tmp_path):
    with MockServer(lambda r: completion("x")) as a, MockServer(lambda r: completion("y")) as b:
        spec = OmegaConf.create({"server": "none", "base_url": [a.base_url, b.base_url], "model": "mock",
                                 "max_concurrency": 4, "timeout_s": 10, "max_retries": 1,
                                 "replica_max_concurrency": 2, "adaptive": False})

        async def go(endpoints):
            client = endpoints.client("m")
            out = await asyncio.gather(*(client.chat(MSGS) for _ in range(4)))
            await endpoints.aclose()
            return out, client

        with Endpoints({"m": spec}, ["m"], tmp_path) as endpoints:
            out, client = asyncio.run(go(endpoints))
    assert sorted(r.content for r in out) == ["x", "x", "y", "y"]  # 2 per replica at once
    assert [r.cap for r in client.replicas] == [2, 2] and client.limit.adaptive is False


@pytest.mark.parametrize("value, message", [
    ([], "must be a URL or a non-empty list of URLs"),
    (["http://a/v1", 3], "must be a URL or a non-empty list of URLs"),
])
def test_bad_replica_lists_are_one_line_errors(tmp_path, value, message):
    spec = OmegaConf.create({"server": "none", "base_url": value, "model": "m", "max_concurrency": 1,
                             "timeout_s": 1, "max_retries": 0})
    with pytest.raises(ToolturnError, match=message) as err:
        Endpoints({"m": spec}, ["m"], tmp_path).__enter__()
    assert "\n" not in str(err.value)


def test_a_managed_server_cannot_list_replicas(tmp_path):
    spec = OmegaConf.create({"server": "vllm", "base_url": ["http://a/v1", "http://b/v1"], "model": "m",
                             "max_concurrency": 1, "timeout_s": 1, "max_retries": 0})
    with pytest.raises(ToolturnError, match=r"llm.endpoints.m.base_url is only for server: none"):
        Endpoints({"m": spec}, ["m"], tmp_path).__enter__()
