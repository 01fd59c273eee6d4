"""The batched CPU server (core/batch_engine.py, core/serve_batched.py) on a tiny random Qwen3.

Batching and the prefix cache must not change what is generated: greedy outputs are compared token for token
with transformers' own `generate`, one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from toolturn.core.batch_engine import BatchEngine, GenRequest, Generation, PrefixCache
from toolturn.core.chat_template import TOOL_CHAT_TEMPLATE
from toolturn.core.endpoints import Endpoints, parse_endpoint
from toolturn.core.llm import Sampling
from toolturn.core.serve_batched import assistant_message, cut_at_stop
from toolturn.core.servers import ManagedServer, ServerSpec, group_alive
from toolturn.train.models import ModelSpec, load_model, save_tokenizer, tokenizer_for

CONF = Path(__file__).resolve().parents[1] / "conf"

STOP = 2  # <|im_end|> of the embedded SmolLM2 tokenizer the tiny model uses


@pytest.fixture(scope="module")
def tiny():
    spec = ModelSpec.from_cfg(OmegaConf.load(CONF / "model" / "tiny_qwen3.yaml"))
    tokenizer = tokenizer_for(spec)
    model = load_model(spec, tokenizer).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tiny, tmp_path_factory):
    model, tokenizer = tiny
    out = tmp_path_factory.mktemp("tiny_qwen3")
    model.save_pretrained(out)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    save_tokenizer(tokenizer, out, 8192)
    return out


def reference(model, prompt: list[int], max_tokens: int) -> list[int]:
    """transformers' greedy `generate`, alone, stopped at the stop token."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=STOP, pad_token_id=STOP)[0, len(prompt):].tolist()
    return out[:out.index(STOP)] if STOP in out else out


class Waiter:
    """Collects Generations by request index; `wait` blocks until all have arrived."""

    def __init__(self, n: int):
        self.results: list[Generation | None] = [None] * n
        self.events = [threading.Event() for _ in range(n)]

    def done(self, i: int):
        def callback(g: Generation) -> None:
            self.results[i] = g
            self.events[i].set()
        return callback

    def wait(self) -> list[Generation]:
        for e in self.events:
            assert e.wait(timeout=600), "the engine did not answer"
        return self.results  # type: ignore[return-value]


def prompts(n: int) -> list[list[int]]:
    """Prompts of different lengths (so that the batch needs left padding), from a fixed generator."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(10, 4000, (7 + 13 * i,), generator=g).tolist() for i in range(n)]


def test_batched_greedy_equals_one_at_a_time(tiny):
    model, _ = tiny
    engine = BatchEngine(model, {STOP}, max_batch=3)  # 5 requests: two wait, then join a running batch
    engine.start()
    try:
        ps = prompts(5)
        w = Waiter(len(ps))
        for i, p in enumerate(ps):
            engine.submit(GenRequest(p, 12 + i, w.done(i), temperature=0))
        results = w.wait()
    finally:
        engine.stop()
    for p, g, i in zip(ps, results, range(len(ps))):
        assert g.error is None
        assert g.tokens == reference(model, p, 12 + i)
        assert g.finish_reason == ("stop" if len(g.tokens) < 12 + i else "length")
    assert engine.steps < sum(len(g.tokens) for g in results)  # some steps decoded several rows


def test_prefix_cache_reuses_a_conversation_without_changing_the_output(tiny):
    model, _ = tiny
    engine = BatchEngine(model, {STOP})
    engine.start()
    try:
        first = prompts(1)[0] * 3
        w = Waiter(1)
        engine.submit(GenRequest(first, 8, w.done(0), temperature=0))
        (g,) = w.wait()
        follow_up = first + g.tokens + [STOP] + prompts(2)[1]  # the next turn: the old reply plus a new message
        w = Waiter(1)
        engine.submit(GenRequest(follow_up, 8, w.done(0), temperature=0))
        (g2,) = w.wait()
    finally:
        engine.stop()
    assert g.cached_tokens == 0
    assert g2.cached_tokens == len(first) + len(g.tokens) - (g.finish_reason == "length")  # the fed tokens
    assert g2.tokens == reference(model, follow_up, 8)
    assert engine.prefix.hits == 1 and engine.prefix.reused_tokens == g2.cached_tokens


def test_requests_sharing_a_prompt_compute_it_once(tiny):
    model, _ = tiny
    engine = BatchEngine(model, {STOP}, max_batch=3)
    engine.start()
    try:
        p = prompts(3)[2]
        w = Waiter(3)
        for i in range(3):  # a task's samples, in flight together
            engine.submit(GenRequest(p, 6, w.done(i), temperature=0))
        results = w.wait()
    finally:
        engine.stop()
    assert [g.cached_tokens for g in results] == [0, len(p) - 1, len(p) - 1]
    assert all(g.tokens == results[0].tokens == reference(model, p, 6) for g in results)


def test_seeds_repeat_and_differ(tiny):
    model, _ = tiny
    engine = BatchEngine(model, {STOP}, max_batch=1)  # alone each time: the same batch company
    engine.start()
    try:
        p = prompts(1)[0]
        w = Waiter(3)
        for i, seed in enumerate((7, 7, 8)):
            engine.submit(GenRequest(p, 24, w.done(i), temperature=1.0, top_p=0.95, seed=seed))
        a, b, c = w.wait()
    finally:
        engine.stop()
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_a_prompt_past_the_context_is_an_error_and_the_engine_goes_on(tiny):
    model, _ = tiny
    engine = BatchEngine(model, {STOP}, max_positions=64)
    engine.start()
    try:
        w = Waiter(2)
        engine.submit(GenRequest(list(range(10, 70)), 8, w.done(0)))
        engine.submit(GenRequest(list(range(10, 30)), 4, w.done(1), temperature=0))
        too_long, fine = w.wait()
    finally:
        engine.stop()
    assert too_long.finish_reason == "error" and "exceeds the model's 64 positions" in too_long.error
    assert fine.error is None and fine.tokens == reference(model, list(range(10, 30)), 4)


def test_prefix_cache_is_bounded_least_recently_used_first():
    kv = lambda n: [(torch.zeros(1, 1, n, 4), torch.zeros(1, 1, n, 4))]  # noqa: E731 - 32 bytes a token
    cache = PrefixCache(max_bytes=32 * 100)
    cache.put(list(range(40)), kv(40))
    cache.put(list(range(100, 140)), kv(40))
    assert cache.longest(list(range(30)) + [999])[0] == 30  # touches the first entry
    cache.put(list(range(200, 240)), kv(40))  # over the bound: the second (least recently used) goes
    assert cache.bytes == 32 * 80
    assert cache.longest(list(range(100, 140)) + [1])[0] == 0
    assert cache.longest(list(range(40)) + [1])[0] == 40
    assert cache.longest(list(range(5)) + [1])[0] == 0  # shorter than MIN_PREFIX: computed again


def test_replies_become_tool_calls_or_stay_raw_text():
    message, calls = assistant_message('Let me check.\n<tool_call>\n{"name": "get_order", "arguments": '
                                       '{"order_id": "A1"}}\n</tool_call>')
    assert calls and message["content"] == "Let me check."
    (call,) = message["tool_calls"]
    assert call["function"] == {"name": "get_order", "arguments": '{"order_id":"A1"}'}
    malformed = '<tool_call>\n{"name": get_order}\n</tool_call>'
    assert assistant_message(malformed) == ({"role": "assistant", "content": malformed}, False)
    assert assistant_message("Hello.") == ({"role": "assistant", "content": "Hello."}, False)
    assert cut_at_stop("one\ntwo\nthree", ["\nthree", "two"]) == ("one\n", True)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stream(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        assert "text/event-stream" in response.headers["Content-Type"]
        lines = [raw.decode().removeprefix("data:").strip() for raw in response if raw.strip()]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_the_managed_server_answers_the_openai_api(tiny, tiny_dir, tmp_path):
    model, tokenizer = tiny
    with ManagedServer(ServerSpec(kind="batched", model=str(tiny_dir)), log_dir=tmp_path) as server:
        url, name = server.base_url, server.model_name
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
        tools = [{"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]
        status, reply = post(f"{url}/chat/completions", {"model": name, "messages": messages, "tools": tools,
                                                         "max_tokens": 6, "temperature": 0})
        assert status == 200, reply
        prompt = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                               return_dict=False, chat_template=TOOL_CHAT_TEMPLATE)
        expected = tokenizer.decode(reference(model, list(prompt), 6), skip_special_tokens=True)
        assert reply["choices"][0]["message"]["content"] == expected
        assert reply["usage"]["prompt_tokens"] == len(prompt)
        # the same conversation again: all but its last prompt token come from the prefix cache
        status, again = post(f"{url}/chat/completions", {"model": name, "messages": messages, "tools": tools,
                                                         "max_tokens": 6, "temperature": 0})
        assert again["choices"][0]["message"] == reply["choices"][0]["message"]
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == len(prompt) - 1
        status, done = post(f"{url}/completions", {"model": name, "prompt": "abc", "max_tokens": 3, "temperature": 0})
        assert status == 200 and done["choices"][0]["finish_reason"] in ("stop", "length")
        assert post(f"{url}/chat/completions", {"model": "other", "messages": messages})[0] == 404
        for bad, words in (({"n": 2}, "n=2 is not supported"), ({"temperature": "hot"}, "temperature must be"),
                           ({"messages": []}, "messages must be a non-empty list"),
                           ({"max_tokens": 0}, "max_tokens must be a whole number"),
                           ({"max_tokens": 10 ** 6}, "exceeds the model's"),
                           ({"max_tokens": 10 ** 6, "stream": True}, "exceeds the model's"),
                           ({"stream": "yes"}, "stream must be true or false")):
            status, error = post(f"{url}/chat/completions", {"model": name, "messages": messages, **bad})
            assert status == 400 and words in error["error"]["message"]
        # streamed: the same text as one answer, in deltas; min_tokens holds off the stop token
        body = {"model": name, "messages": messages, "max_tokens": 5, "min_tokens": 5, "temperature": 0}
        status, whole = post(f"{url}/chat/completions", body)
        assert whole["usage"]["completion_tokens"] == 5
        chunks = stream(f"{url}/chat/completions", {**body, "stream": True})
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
            whole["choices"][0]["message"]["content"]
        assert len(chunks) >= 3 and chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 5
        stats = json.loads(urllib.request.urlopen(f"{url}/engine/stats", timeout=60).read())
        assert stats["prefix_hits"] >= 2 and stats["decoded_tokens"] >= 10
        pid = server.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_replicas_of_the_batched_server_share_the_load_and_one_that_dies_is_taken_out(tiny_dir, tmp_path):
    """`replicas: 2` starts two servers, each on its own cores; requests go to both; after one is killed every
    request is still answered (by the other) and the dead one is counted out; stopping leaves no process."""
    spec = parse_endpoint({"server": "batched", "model": str(tiny_dir), "replicas": 2, "max_concurrency": 4,
                           "max_retries": 1, "probe_s": 600, "cache": False}, "e")
    messages = [{"role": "user", "content": "Say hi."}]
    with Endpoints({"e": spec}, ["e"], tmp_path) as endpoints:
        first, second = endpoints.live["e"].servers
        assert first.port != second.port
        cores = len(os.sched_getaffinity(0))
        for server in (first, second):
            share = os.sched_getaffinity(server.pid)
            environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
            assert f"OMP_NUM_THREADS={len(share)}".encode() in environ
        if cores >= 2:
            assert not os.sched_getaffinity(first.pid) & os.sched_getaffinity(second.pid)

        async def calls(n: int) -> list:
            client = endpoints.client("e")
            return await asyncio.gather(*(client.chat(messages, sampling=Sampling(temperature=0, max_tokens=3))
                                          for _ in range(n)))

        async def scenario() -> dict:
            before = await calls(4)
            os.killpg(second.pid, signal.SIGKILL)
            while group_alive(second.pid):
                await asyncio.sleep(0.01)
            after = await calls(4)
            assert {r.content for r in before + after} == {before[0].content}  # greedy: one answer
            stats = endpoints.client("e").stats()["replicas"]
            await endpoints.aclose()
            return stats

        stats = asyncio.run(scenario())
        live, dead = stats[first.base_url], stats[second.base_url]
        assert live["answered"] >= 6 and dead["answered"] == 2  # least-loaded: two each while both were up
        assert dead["failures"] >= 1 and not dead["healthy"]
        pids = [first.pid, second.pid]
    assert not any(group_alive(pid) for pid in pids)
