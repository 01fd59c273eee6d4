"""The response cache: a hit gives the identical record without a request; identical requests of one dialogue
or of two are still sampled apart; a torn entry is repaired; a killed writer leaves no corrupt entry; the size
bound holds; evaluation never caches."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from conftest import make_cfg
from llm_world import World
from mock_openai import MockServer, completion
from omegaconf import OmegaConf
from toolturn.core.endpoints import Endpoints
from toolturn.core.llm import Endpoint, LLMClient, Sampling
from toolturn.core.llm_cache import STALE_TMP_S, CacheScope, ResponseCache
from toolturn.core.rundir import RunDir
from toolturn.generate.run import generate

MSGS = [{"role": "user", "content": "hi"}]


def counting_server():
    n = {"calls": 0}

    def handler(request: dict) -> dict:
        n["calls"] += 1
        return completion(f"answer {n['calls']}", tool_calls=[{"name": "f", "arguments": {"x": n["calls"]}}],
                          prompt_tokens=11, completion_tokens=n["calls"])
    return MockServer(handler), n


def chats(url: str, cache: ResponseCache, scopes: list[str], sampling: Sampling | None = None) -> list:
    async def go():
        async with LLMClient(Endpoint(url, "mock", max_retries=0), cache=cache) as client:
            named = {name: CacheScope(name) for name in set(scopes)}
            return [await client.chat(MSGS, sampling=sampling, cache_scope=named[name]) for name in scopes]
    return asyncio.run(go())


def test_a_hit_is_the_answer_the_scope_got_before_and_costs_no_request(tmp_path):
    server, n = counting_server()
    with server:
        first = chats(server.base_url, ResponseCache(tmp_path, 1 << 20), ["d1", "d1", "d2"])
        # identical bodies: the second of d1 and the first of d2 are other samples, as without a cache
        assert [r.content for r in first] == ["answer 1", "answer 2", "answer 3"] and n["calls"] == 3
        cache = ResponseCache(tmp_path, 1 << 20)  # a new process: the same scopes replay
        again = chats(server.base_url, cache, ["d1", "d1", "d2", "d2"])
    assert n["calls"] == 4 and cache.hits == 3 and cache.misses == 1
    for a, b in zip(first, again):
        assert (a.content, a.tool_calls, a.finish_reason, a.prompt_tokens, a.completion_tokens, a.reasoning_content) \
            == (b.content, b.tool_calls, b.finish_reason, b.prompt_tokens, b.completion_tokens, b.reasoning_content)
    assert again[3].content == "answer 4"
    with MockServer(lambda r: completion("other")) as s:  # another seed is another request
        assert chats(s.base_url, ResponseCache(tmp_path, 1 << 20), ["d1"], Sampling(seed=7))[0].content == "other"


def test_a_torn_or_foreign_entry_is_removed_and_asked_again(tmp_path):
    server, n = counting_server()
    with server:
        chats(server.base_url, ResponseCache(tmp_path, 1 << 20), ["d"])
        (entry,) = [p for p in tmp_path.rglob("*.json")]
        good = entry.read_bytes()
        for bad in (good[: len(good) // 2], good.replace(entry.stem.encode(), b"0" * 64), b""):
            entry.write_bytes(bad)
            cache = ResponseCache(tmp_path, 1 << 20)
            (r,) = chats(server.base_url, cache, ["d"])
            assert cache.repaired == 1 and cache.hits == 0 and r.content == f"answer {n['calls']}"
            assert ResponseCache(tmp_path, 1 << 20).get(entry.stem)["content"] == r.content  # whole again


WRITER = """
import sys
from toolturn.core.llm_cache import ResponseCache
cache = ResponseCache(sys.argv[1], 1 << 40)
i = 0
while True:
    cache.put(ResponseCache.key(str(i).encode()), {"content": "x" * 200_000 + str(i), "tool_calls": [],
              "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": i, "reasoning_content": None})
    i += 1
"""


def test_a_killed_writer_never_leaves_a_corrupt_entry(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.rglob("*.json"))) < 20:  # observable progress, then kill mid-stream
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    entries = list(tmp_path.rglob("*.json"))
    cache = ResponseCache(tmp_path, 1 << 40)
    assert all(cache.get(p.stem) is not None for p in entries) and cache.repaired == 0
    for tmp in tmp_path.rglob(".*"):  # what the writer was writing when killed: a temp file, removed once stale
        os.utime(tmp, (time.time() - STALE_TMP_S - 1,) * 2)
    ResponseCache(tmp_path, 1 << 40)
    assert not list(tmp_path.rglob(".*"))


def test_the_size_bound_evicts_least_recently_used(tmp_path):
    cache = ResponseCache(tmp_path, 20_000)
    value = {"content": "y" * 1000, "tool_calls": [], "finish_reason": "stop", "prompt_tokens": 1,
             "completion_tokens": 1, "reasoning_content": None}
    keys = [ResponseCache.key(str(i).encode()) for i in range(60)]
    for i, key in enumerate(keys):
        cache.put(key, value)
        os.utime(cache._path(key), (i, i))  # a deterministic use order: oldest first
        cache.get(keys[0])  # used after each put: the most recently used, so kept
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.json"))
    assert total <= 20_000 and cache.evicted > 0
    assert cache.get(keys[0]) is not None and cache.get(keys[-1]) is not None and cache.get(keys[1]) is None


def test_generation_replays_from_the_cache_with_identical_records(tmp_path):
    # one dialogue in flight: with more, a run may start a dialogue past the last it keeps and cancel it at a
    # point that depends on timing, so the two runs' request counts could differ by that dialogue's requests
    with MockServer(World()) as server:
        cfg = lambda out, *extra: make_cfg(  # noqa: E731
            "domain=retail", "roles=llm", "llm=external", f"llm.endpoints.default.base_url={server.base_url}",
            "llm.endpoints.default.model=mock", "policy=report", "num_dialogues=4", "concurrency=1",
            f"out_dir={out}", *extra)
        generate(cfg(tmp_path / "a"))
        paid = len(server.requests)
        generate(cfg(tmp_path / "b", f"llm.endpoints.default.cache_dir={tmp_path / 'a' / 'llm_cache'}"))
        assert len(server.requests) == paid  # every answer came from the cache
        generate(cfg(tmp_path / "c", "llm.endpoints.default.cache=false"))
        assert len(server.requests) > paid and not (tmp_path / "c" / "llm_cache").exists()  # bypassed: paid again

    def records(run):
        out = RunDir(tmp_path / run).records()
        for r in out:
            del r["meta"]["timing"]["latency_s"]
        return out
    assert records("a") == records("b")
    stats = RunDir(tmp_path / "b").stats.read_text()
    assert '"hits"' in stats and '"replicas"' in stats


def test_evaluation_endpoints_have_no_cache(tmp_path):
    spec = OmegaConf.create({"server": "none", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                             "max_concurrency": 1, "timeout_s": 1, "max_retries": 0, "cache": True})
    with Endpoints({"m": spec}, ["m"], tmp_path) as endpoints:  # no cache_dir: how evaluation opens them
        assert endpoints.client("m").cache is None and endpoints.caches == {}
