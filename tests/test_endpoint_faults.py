"""Faulty LLM endpoints: rate limits, refused keys, oversized or malformed replies, odd tool calls.

Each fault ends as a bounded retry, a counted drop of one dialogue (the request was bad), or a
one-line stop of the run that re-running resumes (the endpoint is unusable), never a hang, a
traceback or a burned dialogue index. Retry waits go through an injected sleep, so no test sleeps.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time

import pytest
from conftest import make_cfg
from datasets import Dataset
from llm_world import World
from mock_openai import Fault, MockServer, Script, completion
from toolturn.core.episode import EpisodeState, UserTurn, run_episode
from toolturn.core.errors import ToolturnError
from toolturn.core.llm import (
    Endpoint,
    LLMClient,
    LLMError,
    Sampling,
    parse_text_tool_calls,
)
from toolturn.core.role_model import Meter, RoleModel
from toolturn.core.roles.llm_assistant import LLMAssistant
from toolturn.core.rundir import RunDir
from toolturn.generate.export import to_arrow_row
from toolturn.generate.run import generate

MSGS = [{"role": "user", "content": "hi"}]


def run_calls(url: str, n: int = 1, rng: random.Random | None = None,
              **ep_kw) -> tuple[LLMClient, list, list[float]]:
    """`n` chats one after another on one client: (client, results or LLMErrors, waits chosen)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go():
        endpoint = Endpoint(url, "mock", **{"name": "main", "backoff_s": 0.01, "timeout_s": 5.0, **ep_kw})
        async with LLMClient(endpoint, sleep=sleep, rng=rng) as c:
            out = []
            for _ in range(n):
                try:
                    out.append(await c.chat(MSGS))
                except LLMError as e:
                    out.append(e)
            return c, out
    c, out = asyncio.run(go())
    return c, out, waits


def http_date(offset_s: float) -> str:
    return email.utils.formatdate(time.time() + offset_s, usegmt=True)


# ---------------------------------------------------------------------------------- rate limits

@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after, low, high", [
    ("1", 1.0, 1.0),
    ("0", 0.0, 0.0),
    (str(10 ** 6), 60.0, 60.0),  # capped at max_wait_s
    (30, 25.0, 30.0),  # ints here: an HTTP-date that many seconds from now
    (-3600, 0.0, 0.0),  # a date in the past: go now
    (10 ** 7, 60.0, 60.0),
    ("soon", 0.0, 0.01),  # unreadable: jittered backoff (backoff_s=0.01, first attempt)
], ids=["1s", "0s", "huge", "date", "past-date", "far-date", "unreadable"])
def test_retry_after_is_honoured_within_the_cap(status, retry_after, low, high):
    header = http_date(retry_after) if isinstance(retry_after, int) else retry_after
    with MockServer(Script(Fault.status(status, retry_after=header), completion("ok"))) as s:
        c, (r,), waits = run_calls(s.base_url)
    assert r.content == "ok" and c.retries == 1 and len(waits) == 1
    assert low <= waits[0] <= high


def test_backoff_without_retry_after_is_jittered_exponential_and_capped():
    with MockServer(lambda r: Fault.status(429)) as s:
        fixed = {"adaptive": False}  # an adaptive limit retries 429s for free while it comes down
        _, _, small = run_calls(s.base_url, max_retries=6, backoff_s=1.0, rng=random.Random(1), **fixed)
        _, _, big = run_calls(s.base_url, max_retries=3, backoff_s=1000.0, max_wait_s=5.0, rng=random.Random(1),
                              **fixed)
        global_state = random.getstate()
        _, _, default = run_calls(s.base_url, max_retries=2, backoff_s=1.0, **fixed)
    jitter = random.Random(1)
    draws = [jitter.random() for _ in range(6)]
    assert small == [1.0 * 2.0 ** i * d for i, d in enumerate(draws)]  # full jitter on the doubling base
    assert big == [min(1000.0 * 2.0 ** i * d, 5.0) for i, d in enumerate(draws[:3])]
    assert len(default) == 2 and random.getstate() == global_state  # the default jitter is private


def test_persistent_429_is_fatal_after_the_retry_budget():
    with MockServer(lambda r: Fault.status(429, retry_after=0)) as s:
        _, (e,), waits = run_calls(s.base_url, max_retries=3, adaptive=False)
    assert isinstance(e, LLMError) and e.reason == "http_429" and e.fatal
    assert len(s.requests) == 4 and waits == [0.0] * 3 and "gave up after 4 attempts" in str(e)


def test_persistent_429_with_an_adaptive_limit_lowers_it_to_the_floor_then_spends_the_budget():
    with MockServer(lambda r: Fault.status(429, retry_after=0)) as s:
        c, (e,), waits = run_calls(s.base_url, max_retries=3, max_concurrency=8, min_concurrency=2)
    # 8 -> 6 -> 4 -> 3 -> 2 (x0.8, rounded down): the first three 429s are retried for free; the fourth
    # brings the limit to its floor, so it and the next three spend the budget (4 attempts)
    assert isinstance(e, LLMError) and e.reason == "http_429" and e.fatal and "gave up after 4 attempts" in str(e)
    assert c.limit.current() == 2 and c.limit.decreases == 4 and len(s.requests) == 3 + 4


# ---------------------------------------------------------------------------------- statuses

@pytest.mark.parametrize("status, fatal", [(400, False), (413, False), (422, False),
                                           (401, True), (403, True), (404, True)])
def test_4xx_is_not_retried_and_says_whose_fault(status, fatal):
    body = '{"error": {"message": "nope\\nsecond line"}}'
    with MockServer(Script(Fault.status(status, body=body), completion("ok"))) as s:
        _, (e,), waits = run_calls(s.base_url)
    assert isinstance(e, LLMError) and e.reason == f"http_{status}" and e.fatal is fatal
    assert (len(s.requests), waits) == (1, [])
    message = str(e)
    assert "\n" not in message and f"HTTP {status}" in message and "'main'" in message and s.base_url in message


# ---------------------------------------------------------------------------------- reply size

@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_endless_reply_stops_at_the_byte_cap_and_drops_the_connection(framing):
    with MockServer(Script(Fault.endless(framing), completion("ok"))) as s:
        _, (e, r), waits = run_calls(s.base_url, 2, max_reply_bytes=1 << 16, timeout_s=30)
    # reading it all would end in a timeout: reply_too_large says the reader stopped at the cap
    assert isinstance(e, LLMError) and e.reason == "reply_too_large" and not e.fatal
    assert "max_reply_bytes=65536" in str(e) and waits == []
    assert r.content == "ok" and s.connections == 2  # the oversized reply's connection was not reused


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_reply_at_the_byte_cap_passes_one_byte_more_does_not(framing):
    body = json.dumps(completion("x" * 500)).encode()
    with MockServer(Script(Fault.raw(body, framing))) as s:
        _, (at_cap,), _ = run_calls(s.base_url, max_reply_bytes=len(body))
        _, (over,), _ = run_calls(s.base_url, max_reply_bytes=len(body) - 1)
    assert at_cap.content == "x" * 500
    assert isinstance(over, LLMError) and over.reason == "reply_too_large"


@pytest.mark.parametrize("reply", [
    completion("y" * 101),
    completion(None, tool_calls=[{"name": "get", "arguments": {"q": "z" * 100}}]),
    completion("<tool_call>" + json.dumps({"name": "get", "arguments": {"q": "z" * 100}}) + "</tool_call>"),
], ids=["content", "arguments", "text-call"])
def test_content_fields_over_the_cap_are_reply_too_large(reply):
    with MockServer(Script(reply)) as s:
        _, (e,), waits = run_calls(s.base_url, max_content_chars=100)
    assert isinstance(e, LLMError) and e.reason == "reply_too_large" and not e.fatal and waits == []


def test_content_fields_at_the_cap_pass():
    reply = completion("y" * 100, tool_calls=[{"name": "get", "arguments": "{" + " " * 98 + "}"}])
    reply["choices"][0]["message"]["reasoning_content"] = "r" * 1000  # not read by roles: only the byte cap
    with MockServer(Script(reply)) as s:
        _, (r,), _ = run_calls(s.base_url, max_content_chars=100)
    assert r.content == "y" * 100 and r.tool_calls[0]["arguments"] == {} and len(r.reasoning_content) == 1000


# ---------------------------------------------------------------------------------- broken replies

@pytest.mark.parametrize("fault", [
    Fault.raw(b"{not json", keep=True),
    Fault.raw(b'{"choices": []}'),
    Fault.raw(json.dumps(completion([{"type": "text", "text": "parts"}])).encode()),  # content not a string
    Fault.raw(b"\x00\xff garbage", framing="close"),
    Fault.raw(b"x" * 100, framing="chunked", declared=1000),  # closed mid-chunk
    Fault.stall(30),  # headers, then nothing: the per-attempt timeout
], ids=["invalid-json", "no-choice", "content-parts", "binary", "cut-chunk", "stall"])
def test_broken_reply_is_retried_then_succeeds(fault):
    with MockServer(Script(fault, completion("ok"))) as s:
        c, (r,), waits = run_calls(s.base_url, timeout_s=0.5)
    assert r.content == "ok" and c.retries == 1 and len(waits) == 1


def test_persistent_invalid_json_gives_up_with_the_reason():
    with MockServer(lambda r: Fault.raw(b"<html>Welcome to nginx</html>", keep=True)) as s:
        _, (e,), waits = run_calls(s.base_url, max_retries=2)
    assert isinstance(e, LLMError) and e.reason == "bad_response" and e.fatal
    assert "Welcome to nginx" in str(e) and "gave up after 3 attempts" in str(e) and len(waits) == 2


def test_body_longer_than_content_length_does_not_poison_the_next_request():
    body = json.dumps(completion("first")).encode()
    fault = Fault.raw(body + b"trailing junk", declared=len(body), keep=True)
    with MockServer(Script(fault, completion("second"))) as s:
        c, (r1, r2), _ = run_calls(s.base_url, 2)
    # the junk sits on the pooled connection: the next request reads it, sees no HTTP, retries anew
    assert (r1.content, r2.content) == ("first", "second") and c.retries == 1 and s.connections == 2


# ---------------------------------------------------------------------------------- tool names

ODD_NAMES = [5, 1.5, True, {"name": "get_customer"}, ["get_customer"]]
AS_TEXT = ["5", "1.5", "true", '{"name":"get_customer"}', '["get_customer"]']


@pytest.mark.parametrize("name, expected", [*zip(ODD_NAMES, AS_TEXT), (None, "")],
                         ids=["int", "float", "bool", "object", "array", "null"])
def test_odd_tool_names_become_strings_that_name_no_tool(name, expected):
    text = "<tool_call>" + json.dumps({"name": name, "arguments": [1, 2]}) + "</tool_call>"
    native = completion(None, tool_calls=[{"name": name, "arguments": [1, 2]}, {"name": "get", "arguments": 7}])
    with MockServer(Script(native)) as s:
        _, (r,), _ = run_calls(s.base_url)
    calls = [*r.tool_calls, *parse_text_tool_calls(text)[1]]
    assert [c["name"] for c in calls] == [expected, "get", expected]
    assert all(isinstance(c["arguments"], str) and c["error"] for c in calls)
    assert [c["arguments"] for c in calls] == ["[1,2]", "7", "[1,2]"]


class OneRequestUser:
    async def respond(self, state: EpisodeState) -> UserTurn:
        return UserTurn("Look up customer 1, please.", False) if not state.user_turns else UserTurn(None, True)


def test_a_dialogue_with_odd_tool_calls_exports_with_datasets(retail):
    odd = [{"name": n, "arguments": {"id": 1}} for n in ODD_NAMES] + [{"name": "get_customer", "arguments": [1]}]
    text = "<tool_call>" + json.dumps({"name": 7, "arguments": {"id": 1}}) + "</tool_call>"
    replies = Script(completion(None, tool_calls=odd), completion(text), completion("Done."),
                     completion(None, tool_calls=[{"name": "get_customer", "arguments": {"id": 1}}]), completion("Ok."))
    tools = [t for t in retail.toolset if t["function"]["name"] == "get_customer"]

    async def dialogue(client: LLMClient) -> dict:
        state = EpisodeState(messages=[{"role": "system", "content": "s"}], tools=tools, start=1)
        sandbox = retail.env.open_sandbox()
        try:
            await run_episode(state, OneRequestUser(), LLMAssistant(RoleModel("assistant", client, Sampling(), Meter())),
                              sandbox)
        finally:
            sandbox.close()
        return {"id": f"r{len(state.messages)}", "messages": state.messages, "tools": state.tools, "meta": {}}

    async def go(url):
        async with LLMClient(Endpoint(url, "mock")) as client:
            return [await dialogue(client), await dialogue(client)]

    with MockServer(replies) as s:
        odd_record, plain_record = asyncio.run(go(s.base_url))
    tool_msgs = [m for m in odd_record["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == len(odd) + 1
    errors = [json.loads(m["content"]).get("error", "") for m in tool_msgs]
    assert all("unknown tool" in e for e in errors[:len(ODD_NAMES)]) and errors[len(ODD_NAMES)]
    assert "unknown tool '7'" in errors[-1]
    ds = Dataset.from_list([to_arrow_row(plain_record), to_arrow_row(odd_record)])
    names = [c["function"]["name"] for m in ds[1]["messages"] for c in m["tool_calls"] or []]
    assert names == [*AS_TEXT, "get_customer", "7"]


# ---------------------------------------------------------------------------------- whole runs

def llm_cfg(url, out_dir, *extra, n=2):
    # the scripted assistant does not identify the customer: flag, don't drop (policy=report)
    return make_cfg("pipeline=task_oriented", "domain=retail", "roles=llm", "llm=external",
                    f"llm.endpoints.default.base_url={url}", "llm.endpoints.default.model=mock",
                    "llm.endpoints.default.timeout_s=5", "llm.endpoints.default.max_retries=1",
                    f"num_dialogues={n}", "concurrency=2", f"out_dir={out_dir}", "policy=report", *extra)


def drop_reasons(run_dir) -> list[str]:
    return [row["drop_reason"] for p in (run_dir / "shards").glob("log-*.jsonl")
            for row in map(json.loads, p.read_text().splitlines()) if row["drop_reason"]]


@pytest.mark.parametrize("fault, match", [
    (Fault.status(401, body='{"error": "invalid api key"}'), r"endpoint 'default' .*HTTP 401 \(check the API key\)"),
    (Fault.status(404), r"HTTP 404 \(check base_url and model\)"),
    (Fault.status(429, retry_after=0), r"HTTP 429 \(rate limited\).*gave up after 2 attempts"),
], ids=["401", "404", "429"])
def test_endpoint_faults_stop_the_run_without_burning_indices_and_it_resumes(tmp_path, fault, match):
    with MockServer(lambda r: fault) as server:
        with pytest.raises(ToolturnError, match=match + ".*re-running the same command resumes") as info:
            generate(llm_cfg(server.base_url, tmp_path / "run"))
        assert "\n" not in str(info.value)
        assert not (tmp_path / "run" / "shards").exists() or drop_reasons(tmp_path / "run") == []
        server.handler = World()  # the key is fixed, the rate limit lifted
        run = generate(llm_cfg(server.base_url, tmp_path / "run"))
    assert len(RunDir(run).records()) == 2 and drop_reasons(run) == []


@pytest.mark.parametrize("fault, reason", [
    (Fault.status(400, body='{"error": "prompt is too long"}'), "llm_http_400"),
    (Fault.endless("chunked"), "llm_reply_too_large"),
], ids=["400", "too-large"])
def test_a_bad_request_or_reply_drops_only_its_dialogue(tmp_path, fault, reason):
    with MockServer(World(faults={"user": [fault]})) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1"))
    assert len(RunDir(run).records()) == 2 and drop_reasons(run) == [reason]


def test_an_endpoint_fault_during_domain_synthesis_is_one_line(tmp_path):
    with MockServer(lambda r: Fault.status(403)) as server, pytest.raises(ToolturnError, match="HTTP 403"):
        generate(llm_cfg(server.base_url, tmp_path / "run", "tools=simulated", "domain=synthetic",
                         "domain.name=vet clinic"))


@pytest.mark.parametrize("knob, value", [("max_reply_bytes", 0), ("max_content_chars", 1.5), ("max_wait_s", -1),
                                         ("backoff_s", "'fast'")])
def test_endpoint_size_and_wait_knobs_are_checked(tmp_path, knob, value):
    with pytest.raises(ToolturnError, match=f"llm.endpoints.default.{knob} must be a"):
        generate(llm_cfg("http://127.0.0.1:9/v1", tmp_path / "run", f"llm.endpoints.default.{knob}={value}"))
