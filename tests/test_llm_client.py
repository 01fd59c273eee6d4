"""The LLM client against the scripted mock server: transport, retries, tool calls, JSON replies."""

from __future__ import annotations

import asyncio
import socket

import pytest
from mock_openai import Fault, MockServer, Script, completion
from toolturn.core.llm import (
    ChatResult,
    Endpoint,
    LLMClient,
    LLMError,
    Sampling,
    chat_json,
    extract_json_object,
    parse_text_tool_calls,
)

MSGS = [{"role": "user", "content": "hi"}]


def ep(url: str, **kw) -> Endpoint:
    return Endpoint(url, "mock", **{"backoff_s": 0.01, "timeout_s": 5.0, **kw})


def chat(url: str, *calls: dict, sleep=asyncio.sleep, **ep_kw) -> tuple[LLMClient, list]:
    """Run `calls` (kwargs of chat) one after another on one client; results or LLMErrors."""
    async def go():
        async with LLMClient(ep(url, **ep_kw), sleep=sleep) as c:
            out = []
            for kw in calls or ({},):
                try:
                    out.append(await c.chat(kw.pop("messages", MSGS), **kw))
                except LLMError as e:
                    out.append(e)
            return c, out
    return asyncio.run(go())


# ---------------------------------------------------------------------------------- replies

@pytest.mark.parametrize("chunked", [False, True])
def test_plain_reply_and_token_accounting(chunked):
    with MockServer(lambda r: completion("hello", prompt_tokens=7, completion_tokens=3), chunked=chunked) as s:
        c, (r1, r2) = chat(s.base_url, {"sampling": Sampling(temperature=0.1, max_tokens=9, seed=3)}, {},
                           api_key="sk-test")
    assert isinstance(r1, ChatResult) and r1.content == "hello" and r1.tool_calls == []
    assert (r1.finish_reason, r1.prompt_tokens, r1.completion_tokens) == ("stop", 7, 3)
    assert r1.latency_s > 0
    assert (c.calls, c.retries, c.failures, c.prompt_tokens, c.completion_tokens) == (2, 0, 0, 14, 6)
    req = s.requests[0]
    assert req["model"] == "mock" and req["messages"] == MSGS
    assert (req["temperature"], req["max_tokens"], req["seed"]) == (0.1, 9, 3)
    assert "seed" not in s.requests[1] and "tools" not in s.requests[1]
    assert s.last_headers["authorization"] == "Bearer sk-test"
    assert s.connections == 1  # keep-alive reuse


def test_missing_usage_counts_zero_and_empty_reply_is_returned():
    reply = completion(None)
    del reply["usage"]
    with MockServer(lambda r: reply) as s:
        c, (r,) = chat(s.base_url)
    assert (r.content, r.tool_calls, r.prompt_tokens, c.completion_tokens) == ("", [], 0, 0)


def test_connection_close_header_drops_connection():
    with MockServer(lambda r: completion("x"), keep_alive=False) as s:
        c, rs = chat(s.base_url, {}, {}, {})
    assert all(r.content == "x" for r in rs) and s.connections == 3


def test_native_tool_calls_and_wire_format():
    tools = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}]
    reply = completion(None, tool_calls=[{"name": "get", "arguments": {"id": 1}, "id": "abc"},
                                         {"name": "put", "arguments": "{not json"},
                                         {"name": "ping", "arguments": ""}], finish_reason="tool_calls")
    history = [*MSGS, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "get", "arguments": {"id": 1}}}]},
        {"role": "tool", "tool_call_id": "c0", "name": "get", "content": "{}"}]
    with MockServer(lambda r: reply) as s:
        _, (r,) = chat(s.base_url, {"messages": history, "tools": tools, "tool_choice": "auto"})
    assert r.tool_calls == [{"id": "abc", "name": "get", "arguments": {"id": 1}},
                            {"id": "call_mock_1", "name": "put", "arguments": "{not json",
                             "error": "arguments are not valid JSON"},
                            {"id": "call_mock_2", "name": "ping", "arguments": {}}]
    req = s.requests[0]
    assert req["tools"] == tools and req["tool_choice"] == "auto"
    # object arguments in the dialogue record go out as the JSON string the API expects
    assert req["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"id": 1}'
    assert history[1]["tool_calls"][0]["function"]["arguments"] == {"id": 1}  # caller's list untouched


def test_text_tool_calls_through_chat():
    text = 'Let me look.\n<tool_call>\n{"name": "get", "arguments": {"id": 2}}\n</tool_call>'
    with MockServer(lambda r: completion(text)) as s:
        _, (r,) = chat(s.base_url)
    assert r.content == "Let me look."
    assert r.tool_calls == [{"id": "call_0", "name": "get", "arguments": {"id": 2}}]


@pytest.mark.parametrize("text, content, calls", [
    ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
     '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>', "",
     [{"id": "call_0", "name": "a", "arguments": {"x": 1}}, {"id": "call_1", "name": "b", "arguments": {}}]),
    ('ok<tool_call>{"name":"a","arguments":{"x":1}}</tool_call> done', "ok done",
     [{"id": "call_0", "name": "a", "arguments": {"x": 1}}]),
    ('<tool_call>{"name": "a", "parameters": {"x": 1}}</tool_call>', "",
     [{"id": "call_0", "name": "a", "arguments": {"x": 1}}]),
    ('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>', "",
     [{"id": "call_0", "name": "a", "arguments": {"x": 1}}]),
    ('<tool_call>{"name": "a", "arguments": "{x: 1"}</tool_call>', "",
     [{"id": "call_0", "name": "a", "arguments": "{x: 1", "error": "arguments are not valid JSON"}]),
    ('<tool_call>{"name": "a"}</tool_call>', "", [{"id": "call_0", "name": "a", "arguments": {}}]),
    ('<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]</tool_call>', "",
     [{"id": "call_0", "name": "a", "arguments": {}}, {"id": "call_1", "name": "b", "arguments": {}}]),
    ('<tool_call>{"name": "a", "arguments": {"x": 1}}', "",  # unclosed: the model stopped at its tag
     [{"id": "call_0", "name": "a", "arguments": {"x": 1}}]),
    ('<tool_call>{"name": "a", "arguments": {"x": </tool_call>', "",
     [{"id": "call_0", "name": "a", "arguments": '{"name": "a", "arguments": {"x":',
       "error": "tool call is not valid JSON"}]),
    ("no calls here\n", "no calls here\n", []),
])
def test_parse_text_tool_calls(text, content, calls):
    assert parse_text_tool_calls(text) == (content, calls)


# ---------------------------------------------------------------------------------- failures

def test_500_then_success_is_retried():
    with MockServer(Script(Fault.status(500), Fault.status(503), completion("ok"))) as s:
        c, (r,) = chat(s.base_url)
    assert r.content == "ok" and (c.retries, c.failures, len(s.requests)) == (2, 0, 3)


def test_400_raises_immediately_with_body():
    with MockServer(Script(Fault.status(400, body='{"error": "messages: field required"}'), completion("ok"))) as s:
        c, (e,) = chat(s.base_url)
    assert isinstance(e, LLMError) and e.reason == "http_400" and not e.fatal
    assert "messages: field required" in str(e) and s.base_url in str(e)
    assert (len(s.requests), c.retries, c.failures) == (1, 0, 1)


def test_retries_exhausted_raise_last_reason():
    with MockServer(lambda r: Fault.status(502)) as s:
        c, (e,) = chat(s.base_url, max_retries=2)
    assert e.reason == "http_502" and "3 attempts" in str(e) and len(s.requests) == 3 and c.retries == 2


def test_hung_request_times_out():
    with MockServer(lambda r: Fault.hang(60)) as s:
        c, (e,) = chat(s.base_url, timeout_s=0.2, max_retries=0)
    assert isinstance(e, LLMError) and e.reason == "timeout" and "no response within 0.2 s" in str(e)
    # one attempt and no retry; whether it reached the server within 0.2 s depends on the machine's load
    assert (c.retries, c.failures) == (0, 1) and len(s.requests) <= 1 and s.connections <= 1


def test_hung_request_retried_then_success():
    with MockServer(Script(Fault.hang(60), completion("ok"))) as s:
        # retries to spare: on a loaded machine an answer may miss the 1 s too; the hung first request never does
        c, (r,) = chat(s.base_url, timeout_s=1.0, max_retries=8)
    assert r.content == "ok" and c.retries >= 1 and len(s.requests) == c.retries + 1


@pytest.mark.parametrize("fault", [Fault.close(), Fault.truncated_body()], ids=["close", "truncated"])
def test_broken_response_retried_then_success(fault):
    with MockServer(Script(fault, completion("ok"))) as s:
        c, (r,) = chat(s.base_url)
    assert r.content == "ok" and c.retries == 1 and s.connections == 2


def test_refused_connection_fails_at_once_naming_url():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    # a port bound but not listening refuses connections, and no other process can take it meanwhile
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
        c, (e,) = chat(url, max_retries=1, backoff_s=0.01, sleep=sleep)
    assert isinstance(e, LLMError) and e.reason == "connection"  # refused, not waited out (timeout_s=5)
    assert url in str(e) and "gave up after 2 attempts" in str(e)
    assert (c.retries, c.failures, len(waits)) == (1, 1, 1) and 0 <= waits[0] <= 0.01


def test_pooled_connection_the_server_closed_is_not_reused():
    async def go(s: MockServer):
        async with LLMClient(ep(s.base_url, max_retries=0)) as c:
            first = await c.chat(MSGS)
            s.drop_connections()
            (conn,) = c.replicas[0].idle
            await asyncio.wait_for(conn.wait_closed(), 10)  # until the client's end has seen the close
            return first, await c.chat(MSGS), c
    with MockServer(lambda r: completion("ok")) as s:
        first, second, c = asyncio.run(go(s))
    assert (first.content, second.content, c.failures) == ("ok", "ok", 0)
    assert (s.connections, s.closed) == (2, 2)


def test_bad_response_and_closed_client():
    with MockServer(lambda r: {"unexpected": True}) as s:
        _, (e,) = chat(s.base_url, max_retries=1)
    assert e.reason == "bad_response" and e.fatal and "unexpected" in str(e) and len(s.requests) == 2

    async def closed():
        c = LLMClient(ep("http://127.0.0.1:9/v1"))
        await c.aclose()
        await c.chat(MSGS)
    with pytest.raises(LLMError) as info:
        asyncio.run(closed())
    assert info.value.reason == "closed"


# ---------------------------------------------------------------------------------- concurrency

def test_concurrency_limit_respected():
    async def go(url):
        async with LLMClient(ep(url, max_concurrency=3)) as c:
            return await asyncio.gather(*(c.chat(MSGS) for _ in range(10)))
    with MockServer(lambda r: completion("ok"), latency_s=0.1) as s:
        rs = asyncio.run(go(s.base_url))
    assert len(rs) == 10 and s.max_in_flight == 3 and s.connections == 3


def test_throughput_smoke_256_concurrent():
    async def go(url):
        async with LLMClient(ep(url, max_concurrency=64)) as c:
            rs = await asyncio.gather(*(c.chat(MSGS) for _ in range(256)))
            return rs, c
    with MockServer(lambda r: completion("ok"), latency_s=0.05) as s:
        rs, c = asyncio.run(go(s.base_url))
    assert all(r.content == "ok" for r in rs) and c.failures == 0 and c.calls == 256
    assert s.connections <= 64 and s.max_in_flight <= 64  # speed lives in benchmarks/orchestration.py


# ---------------------------------------------------------------------------------- chat_json

REQ = {"user_message": str, "is_task_complete": bool}
GOOD = '{"user_message": "hi", "is_task_complete": false}'


def json_call(*replies: dict):
    async def go(url):
        async with LLMClient(ep(url)) as c:
            return await chat_json(c, list(MSGS), required=REQ)
    with MockServer(Script(*replies)) as s:
        return asyncio.run(go(s.base_url)), s.requests


def test_chat_json_ok():
    (obj, status), reqs = json_call(completion(GOOD))
    assert (obj, status, len(reqs)) == ({"user_message": "hi", "is_task_complete": False}, "ok", 1)


def test_chat_json_fenced_with_prose():
    (obj, status), _ = json_call(completion(f"Sure! Here it is:\n```json\n{GOOD}\n```\nAnything else?"))
    assert status == "ok" and obj["user_message"] == "hi"


def test_chat_json_repaired():
    (obj, status), reqs = json_call(completion('{"user_message": "hi", is_task_complete: no}'), completion(GOOD))
    assert status == "repaired" and obj["is_task_complete"] is False
    repair = reqs[1]["messages"]
    assert repair[:1] == MSGS and repair[1]["role"] == "assistant" and repair[2]["role"] == "user"
    assert "is_task_complete" in repair[2]["content"] and "boolean" in repair[2]["content"]
    assert len(reqs[0]["messages"]) == 1


def test_chat_json_wrong_type_twice():
    bad = completion('{"user_message": "hi", "is_task_complete": "yes"}')
    (obj, status), reqs = json_call(bad, bad)
    assert (obj, status, len(reqs)) == (None, "wrong_type:is_task_complete", 2)
    assert '"is_task_complete" must be a boolean' in reqs[1]["messages"][-1]["content"]


@pytest.mark.parametrize("reply, reason", [
    (completion(""), "empty_reply"),
    (completion('{"user_message": "a very long mess', finish_reason="length"), "truncated"),
    (completion('{"user_message": "hi"}'), "missing_key:is_task_complete"),
    (completion("I cannot answer in JSON."), "malformed_json"),
])
def test_chat_json_failures(reply, reason):
    (obj, status), reqs = json_call(reply)
    assert (obj, status, len(reqs)) == (None, reason, 2)


def test_extract_json_object():
    assert extract_json_object('x {"a": "}{", "b": {"c": [1]}} y {"d": 1}') == {"a": "}{", "b": {"c": [1]}}
    assert extract_json_object('{not json} then {"a": "\\"}"}') == {"a": '"}'}
    assert extract_json_object('{"a": 1') is None
    assert extract_json_object(' \n{"a": {"b": "}"}, "c": "\\\\"}\n') == {"a": {"b": "}"}, "c": "\\"}  # all JSON
    assert extract_json_object('{"a": 1} and {"b": 2}') == {"a": 1}  # not one value: the first object
