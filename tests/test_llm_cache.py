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


def journal_lines(root) -> list[bytes]:
    return [line for p in sorted(root.glob("journal-*.jsonl")) for line in p.read_bytes().splitlines(keepends=True)]


def test_a_torn_or_broken_entry_is_asked_again(tmp_path):
    server, n = counting_server()
    with server:
        first = ResponseCache(tmp_path, 1 << 20)
        chats(server.base_url, first, ["d"])
        first.close()
        (journal,) = tmp_path.glob("journal-*.jsonl")
        good = journal.read_bytes()
        key = good[8:72].decode()
        # a torn last line (a killed writer), and a whole line whose entry does not check (a disk fault)
        for bad, torn, repaired in ((good[: len(good) // 2], 1, 0), (good.replace(b'"result"', b'"resulx"'), 0, 1)):
            journal.write_bytes(bad)
            cache = ResponseCache(tmp_path, 1 << 20)
            (r,) = chats(server.base_url, cache, ["d"])
            assert (cache.torn, cache.repaired, cache.hits) == (torn, repaired, 0) and r.content == f"answer {n['calls']}"
            cache.close()
            again = ResponseCache(tmp_path, 1 << 20)
            assert again.get(key)["content"] == r.content  # whole again: the later line wins
            for extra in set(tmp_path.glob("journal-*.jsonl")) - {journal}:
                extra.unlink()


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
        # observable progress (20 entries' bytes; reading the growing journal to count lines cost a minute), then
        # kill mid-stream
        while sum(p.stat().st_size for p in tmp_path.glob("journal-*.jsonl")) < 20 * 200_000:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    whole = [line for line in journal_lines(tmp_path) if line.endswith(b"\n")]
    cache = ResponseCache(tmp_path, 1 << 40)
    assert len(whole) >= 20 and cache.torn in (0, 1) and cache.repaired == 0
    for i in range(len(whole)):
        assert cache.get(ResponseCache.key(str(i).encode()))["completion_tokens"] == i
    assert cache.get(ResponseCache.key(str(len(whole)).encode())) is None  # the torn one, if any, is asked again


def test_the_size_bound_evicts_least_recently_used(tmp_path):
    cache = ResponseCache(tmp_path, 20_000)
    value = {"content": "y" * 1000, "tool_calls": [], "finish_reason": "stop", "prompt_tokens": 1,
             "completion_tokens": 1, "reasoning_content": None}
    keys = [ResponseCache.key(str(i).encode()) for i in range(60)]
    for key in keys:
        cache.put(key, value)
        cache.get(keys[0])  # used after each put: the most recently used, so kept
    cache.close()
    total = sum(p.stat().st_size for p in tmp_path.glob("journal-*.jsonl"))
    assert total <= 20_000 and cache.evicted > 0 and len(list(tmp_path.glob("journal-*.jsonl"))) == 1
    assert cache.get(keys[0]) is not None and cache.get(keys[-1]) is not None and cache.get(keys[1]) is None
    reopened = ResponseCache(tmp_path, 20_000)  # what is on disk is what the bound kept
    assert reopened.get(keys[0]) is not None and reopened.get(keys[-1]) is not None and reopened.get(keys[1]) is None
    # a compaction's temp file left by a killed process is removed once stale
    stale = tmp_path / ".journal-1-ab.jsonl.tmp-1-cd"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - STALE_TMP_S - 1,) * 2)
    ResponseCache(tmp_path, 20_000)
    assert not stale.exists()


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
