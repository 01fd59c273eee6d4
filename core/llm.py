"""One async OpenAI-compatible chat-completions client, used for every LLM call in toolturn.

Why not the `openai` SDK: on a 2-core machine it reaches only 0.38-0.64 of ideal throughput at 256
concurrent requests, while a lean client on raw asyncio streams reaches 0.97
(`docs/architecture.md` §7). So the transport here is HTTP/1.1 on an asyncio Protocol (`core/http.py`), with
a keep-alive pool, orjson bodies and plain dicts.

- `LLMClient.chat(...) -> ChatResult`: one completion, with a per-attempt timeout, retries with
  backoff (honouring a bounded Retry-After), a byte cap on the reply, and token accounting. Requests go
  to the least-loaded healthy replica of the endpoint under an adaptive in-flight limit
  (`core/replicas.py`, `core/adaptive_limit.py`); with a `ResponseCache` (`core/llm_cache.py`) a request
  already answered is not sent again.
- `parse_text_tool_calls(text)`: Qwen3-style `<tool_call>` blocks in raw text -> tool calls.
- `chat_json(client, messages, required=...)`: a JSON-object reply, checked and repaired once.
- `LLMError`: a request that failed for good; `reason` says why, `fatal` whether the endpoint (and so
  the run) is unusable or only this request was bad.

A client belongs to the event loop that first uses it: its pool holds that loop's sockets.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from toolturn.core.adaptive_limit import AdaptiveLimit
from toolturn.core.deadlines import Deadlines
from toolturn.core.errors import ToolturnError
from toolturn.core.http import BadResponse, HttpConnection
from toolturn.core.llm_cache import CacheScope, ResponseCache
from toolturn.core.replicas import MAX_PROBE_S, Replica, ReplicaPool

log = logging.getLogger("toolturn.llm")


@dataclass
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str | None = None
    max_concurrency: int = 64  # in flight, all replicas together; the adaptive limit's ceiling
    timeout_s: float = 120.0  # per attempt, connecting included
    max_retries: int = 4
    backoff_s: float = 0.5
    max_wait_s: float = 60.0  # cap on one wait between attempts (Retry-After or backoff)
    max_reply_bytes: int = 1 << 20  # one response body; reading stops there (reply_too_large)
    max_content_chars: int = 1 << 17  # the content or one tool call's arguments of a reply
    name: str = ""  # the config name (llm.endpoints.<name>), for messages
    replicas: tuple[str, ...] = ()  # base URLs of replicas serving the same model; when set, base_url is the first
    replica_max_concurrency: int | None = None  # in flight per replica (None: max_concurrency)
    probe_s: float = 1.0  # first wait before probing a replica that was taken out (doubles, up to 30 s)
    adaptive: bool = True  # lower the in-flight limit on 429s and timeouts, raise it back while answers come
    min_concurrency: int = 1  # the adaptive limit's floor
    latency_tolerance: float | None = None  # also lower it when latency per token passes this x the best seen

    def urls(self) -> list[str]:
        return list(self.replicas) or [self.base_url]


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    # `transformers serve` only: a JSON string that replaces the model's generation config (the only way to
    # switch sampling on for a model whose generation_config.json lacks do_sample); other servers never get it
    generation_config: str | None = None


@dataclass
class ChatResult:
    content: str
    tool_calls: list[dict]  # {"id", "name", "arguments": dict} (+ "error" when undecodable)
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # from getting a concurrency slot to the answer, retries included
    reasoning_content: str | None = None  # set by servers that run a reasoning parser


class LLMError(ToolturnError):
    """A chat request that failed for good. `reason`: timeout | connection | http_<status> |
    bad_response | reply_too_large | model_output (the server could not parse the model's reply) | closed.

    `fatal` (all but a 4xx that blames the request, reply_too_large and model_output): the endpoint is unusable
    (wrong key, URL or model, rate-limited, down, hung, not speaking the API), so the run must stop;
    otherwise only this request was bad and only its dialogue is lost.
    """

    def __init__(self, reason: str, message: str, *, fatal: bool = True):
        super().__init__(message)
        self.reason, self.fatal = reason, fatal


_RETRIED_STATUS = {408, 429}  # and every 5xx
_ENDPOINT_STATUS = {401, 403, 404, 405, 407}  # a 4xx that says the endpoint config is wrong
# A 5xx whose body says the server could not parse the model's own output (`transformers serve` on a
# malformed <tool_call> block): a property of this completion, so not retried (a greedy or seeded
# resample is the same) and not fatal; the caller counts it as the model's failure.
MODEL_OUTPUT_ERRORS = ("could not parse region as JSON", "could not parse after dialect transforms")
_HINTS = {401: " (check the API key)", 403: " (check the API key)", 404: " (check base_url and model)",
          429: " (rate limited)"}


# ---------------------------------------------------------------------------------- tool calls

_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)  # last may be unclosed
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


def parse_text_tool_calls(text: str, *, first_id: int = 0) -> tuple[str, list[dict]]:
    """Split Qwen3-style `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks out of text.

    Returns the remaining text (stripped) and the calls as `{"id", "name", "arguments"}`, with ids
    `call_<n>` counted from `first_id`. A block may hold one call or a list of calls, say
    "parameters" instead of "arguments", or give the arguments as a JSON string. A call that cannot
    be decoded still comes back, with an "error" key, so that the caller can answer it as an error.
    Text without blocks comes back unchanged.
    """
    if "<tool_call>" not in text:
        return text, []
    calls: list[dict] = []
    for block in _TOOL_CALL_BLOCK.findall(text):
        for call in _decode_block(block.strip()):
            calls.append({"id": f"call_{first_id + len(calls)}", **call})
    return _TOOL_CALL_BLOCK.sub("", text).strip(), calls


def _decode_block(body: str) -> list[dict]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        name = _NAME.search(body)
        return [{"name": name.group(1) if name else "", "arguments": body,
                 "error": "tool call is not valid JSON"}]
    return [_decode_call(item) for item in (obj if isinstance(obj, list) else [obj])]


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _decode_call(item: Any) -> dict:
    """`{"name": str, "arguments": dict | str}` (+ "error") from one call as the model wrote it.

    Whatever the model wrote, the name is a string and the arguments an object or a string, so that
    records keep one type per field (Arrow needs it). A name that is not a string becomes its JSON
    text, which names no tool: the executor answers it as an unknown tool.
    """
    if isinstance(item, dict) and isinstance(item.get("function"), dict):
        item = item["function"]  # OpenAI-shaped {"type": "function", "function": {...}}
    if not isinstance(item, dict):
        return {"name": "", "arguments": _json_text(item), "error": "tool call is not a JSON object"}
    name = item.get("name")
    call = {"name": name if isinstance(name, str) else "" if name is None else _json_text(name),
            **_decode_arguments(item["arguments"] if "arguments" in item else item.get("parameters"))}
    if not isinstance(name, str):
        call["error"] = "tool call has no name" if name is None else "tool name is not a string"
    return call


def _decode_arguments(args: Any) -> dict:
    """`{"arguments": dict}`, or the arguments as a string plus an "error" when not a JSON object."""
    if isinstance(args, dict):
        return {"arguments": args}
    if args is None or (isinstance(args, str) and not args.strip()):
        return {"arguments": {}}
    if isinstance(args, str):
        try:
            decoded = orjson.loads(args)
        except orjson.JSONDecodeError:
            return {"arguments": args, "error": "arguments are not valid JSON"}
        if isinstance(decoded, dict):
            return {"arguments": decoded}
    return {"arguments": args if isinstance(args, str) else _json_text(args),
            "error": "arguments are not a JSON object"}


def _native_tool_calls(raw: list) -> list[dict]:
    return [{"id": tc["id"] if isinstance(tc, dict) and isinstance(tc.get("id"), str) and tc["id"] else f"call_{i}",
             **_decode_call(tc)} for i, tc in enumerate(raw)]


_ARGUMENTS_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False), built once


def _wire_messages(messages: list[dict]) -> list[dict]:
    """Dialogue records keep tool-call arguments as objects; the OpenAI API wants JSON strings. An
    assistant's recorded `reasoning_content` is not sent back: some OpenAI-compatible APIs refuse the
    field in a request (DeepSeek's answers 400), and the model sees what it saw before reasoning was kept.

    Copies only the messages that need it. `json.dumps` spacing matches the `tojson` filter of HF
    chat templates, for servers that render the string as-is.
    """
    def wire(tc: dict) -> dict:
        fn = tc.get("function")
        if not isinstance(fn, dict) or isinstance(fn.get("arguments"), str):
            return tc
        args = fn.get("arguments")
        return {**tc, "function": {**fn, "arguments": _ARGUMENTS_JSON.encode({} if args is None else args)}}

    out = messages
    for i, m in enumerate(messages):
        sent = m
        if "reasoning_content" in sent:
            sent = {k: v for k, v in sent.items() if k != "reasoning_content"}
        if sent.get("tool_calls"):
            wired = [wire(tc) for tc in sent["tool_calls"]]
            if any(w is not tc for w, tc in zip(wired, sent["tool_calls"])):
                sent = {**sent, "tool_calls": wired}
        if sent is not m:
            out = list(messages) if out is messages else out
            out[i] = sent
    return out


def _snippet(data: bytes | None, n: int = 300) -> str:
    return "(body over the size cap)" if data is None else data[:n].decode("utf-8", "replace")


def _tokens(value: Any) -> int:
    if type(value) is int:
        return value
    return int(value) if isinstance(value, float) and math.isfinite(value) else 0


def _retry_after_s(value: str) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP-date) as seconds from now; None if unreadable."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC without a claim about the sender's zone
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# ---------------------------------------------------------------------------------- client

class LLMClient:
    """Async chat-completions client for one endpoint (one or more replicas); see the module docstring.

    `sleep` waits between attempts (tests pass one that records the delay and returns at once);
    `rng` draws the backoff jitter (default: a private Random, so retries leave the global one alone);
    `cache`, if given, answers requests already answered (`core/llm_cache.py`).
    """

    def __init__(self, endpoint: Endpoint, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rng: random.Random | None = None, cache: ResponseCache | None = None):
        self.endpoint = endpoint
        urls = endpoint.urls()
        cap = min(endpoint.replica_max_concurrency or endpoint.max_concurrency, endpoint.max_concurrency)
        self.replicas = [Replica.parse(url, cap, i) for i, url in enumerate(urls)]
        self._url = self.replicas[0].base_url if len(urls) == 1 else f"[{', '.join(r.base_url for r in self.replicas)}]"
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        auth = f"Authorization: Bearer {endpoint.api_key}\r\n" if endpoint.api_key else ""
        self._heads = [(f"POST {r.path}/chat/completions HTTP/1.1\r\nHost: {r.host_header}\r\n"
                        f"{auth}Content-Type: application/json\r\nAccept: application/json\r\n"
                        "Content-Length: ").encode() for r in self.replicas]
        self._auth = auth
        self.limit = AdaptiveLimit(endpoint.max_concurrency, minimum=min(endpoint.min_concurrency,
                                                                         endpoint.max_concurrency),
                                   adaptive=endpoint.adaptive, latency_tolerance=endpoint.latency_tolerance,
                                   name=endpoint.name)
        self.pool = ReplicaPool(self.replicas, self.limit, endpoint.probe_s)
        self.pool.on_eject = self._start_probe
        self._probes: set[asyncio.Task] = set()
        self.cache = cache
        self._scope = CacheScope("")  # for calls that name no scope
        self._deadlines = Deadlines(endpoint.timeout_s)  # each attempt's, connecting included
        self._closed = False
        self.calls = self.retries = self.failures = 0
        self.prompt_tokens = self.completion_tokens = 0

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close idle connections and stop probes; busy connections close when their request ends. Further
        calls fail."""
        self._closed = True
        self._deadlines.close()
        for task in self._probes:
            task.cancel()
        idle = [conn for r in self.replicas for conn in r.idle]
        for r in self.replicas:
            r.idle.clear()
        for conn in idle:
            conn.close()
        await asyncio.gather(*self._probes, *(conn.wait_closed() for conn in idle), return_exceptions=True)
        self._probes.clear()

    def stats(self) -> dict:
        """Counters for stats.json: requests, tokens, the concurrency limit, each replica, the cache."""
        return {"calls": self.calls, "retries": self.retries, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "concurrency": self.limit.stats(), "replicas": self.pool.stats(),
                **({"cache": self.cache.stats()} if self.cache is not None else {})}

    async def chat(self, messages: list[dict], tools: list[dict] | None = None,
                   sampling: Sampling | None = None, tool_choice: Any = None,
                   response_format: dict | None = None, cache_scope: CacheScope | None = None) -> ChatResult:
        """One completion. `cache_scope`: the sequence of calls this one belongs to (a dialogue), which
        numbers identical requests for the cache."""
        if self._closed:
            raise LLMError("closed", self._message("the client is closed"))
        s = sampling or Sampling()
        payload: dict[str, Any] = {"model": self.endpoint.model, "messages": _wire_messages(messages),
                                   "temperature": s.temperature, "top_p": s.top_p,
                                   "max_tokens": s.max_tokens}
        for key, value in (("seed", s.seed), ("tools", tools or None), ("tool_choice", tool_choice),
                           ("response_format", response_format), ("generation_config", s.generation_config)):
            if value is not None:
                payload[key] = value
        body = orjson.dumps(payload)
        self.calls += 1
        key = None
        if self.cache is not None:
            key = self.cache.key((cache_scope or self._scope).tag(body))
            hit = self.cache.get(key)
            if hit is not None:
                return ChatResult(**hit, latency_s=0.0)
        try:
            t0 = time.perf_counter()
            result = await self._request(body)
            result.latency_s = time.perf_counter() - t0
        except LLMError:
            self.failures += 1
            raise
        if key is not None:
            self.cache.put(key, {"content": result.content, "tool_calls": result.tool_calls,
                                 "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
                                 "completion_tokens": result.completion_tokens,
                                 "reasoning_content": result.reasoning_content})
        return result

    def _message(self, detail: str) -> str:
        name = f"'{self.endpoint.name}' " if self.endpoint.name else ""
        return " ".join(f"LLM endpoint {name}{self._url} (model {self.endpoint.model!r}): {detail}".split())

    async def _request(self, body: bytes) -> ChatResult:
        """Post until a usable completion, retrying what may pass (timeouts, resets, 408/429/5xx,
        malformed replies) up to `max_retries` times; raise LLMError for the rest.

        Attempts that cost no retry: one that failed on a replica while another is healthy (the request
        moves there at once; at most once per replica), and a 429 while the adaptive limit can still come down (the lower
        limit is the remedy, so no dialogue is lost to rate limiting while it can adapt)."""
        ep = self.endpoint
        attempt = free = 0
        while True:
            retry_after = None
            slot = await self.pool.acquire()
            replica, head = slot.replica, self._heads[slot.replica.index]
            t0 = time.perf_counter()
            try:
                with self._deadlines.limit():
                    status, headers, data = await self._post(replica, head, body)
                if 200 <= status < 300:
                    if data is None:
                        raise LLMError("reply_too_large", self._message(
                            f"reply body over max_reply_bytes={ep.max_reply_bytes}"), fatal=False)
                    result = self._result(data)
                    self.pool.succeeded(slot, time.perf_counter() - t0, result.completion_tokens)
                    return result
            except TimeoutError:  # before OSError: TimeoutError is one
                reason, detail = "timeout", f"no response within {ep.timeout_s:g} s"
                self.pool.congested(slot, "timeout")
                moved = self.pool.failed(slot)
            except (OSError, EOFError) as e:  # EOFError: the server closed mid-response
                reason, detail = "connection", f"{type(e).__name__}: {e}"
                moved = self.pool.failed(slot)
            except (BadResponse, ValueError) as e:
                reason, detail = "bad_response", f"malformed response: {e}"
                moved = self.pool.failed(slot)
            else:
                reason, detail = f"http_{status}", f"HTTP {status}{_HINTS.get(status, '')}: {_snippet(data)}"
                if status >= 500 and data is not None and any(m.encode() in data for m in MODEL_OUTPUT_ERRORS):
                    raise LLMError("model_output", self._message(detail), fatal=False)
                if status < 500 and status not in _RETRIED_STATUS:
                    blames_request = 400 <= status < 500 and status not in _ENDPOINT_STATUS
                    raise LLMError(reason, self._message(detail), fatal=not blames_request)
                retry_after = headers.get("retry-after")
                if status == 429:
                    self.pool.congested(slot, "rate limited")
                    moved = False
                else:
                    moved = self.pool.failed(slot)
            finally:
                self.pool.release(slot)
            if moved and free < len(self.replicas):
                free += 1
                self.retries += 1
                continue  # at once, to a healthy replica
            if reason == "http_429" and self.limit.above_minimum():
                self.retries += 1
                await self._sleep(self._delay(0, retry_after))
                continue
            if attempt == ep.max_retries:
                raise LLMError(reason, self._message(f"{detail} (gave up after {attempt + 1} attempts)"))
            if self._closed:
                raise LLMError("closed", self._message(f"client closed while retrying ({detail})"))
            self.retries += 1
            await self._sleep(self._delay(attempt, retry_after))
            attempt += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """The server's Retry-After if readable, else exponential backoff with full jitter; capped."""
        wait = _retry_after_s(retry_after) if retry_after else None
        if wait is None:
            wait = self.endpoint.backoff_s * 2.0 ** min(attempt, 32) * self._rng.random()
        return min(wait, self.endpoint.max_wait_s)

    async def _post(self, replica: Replica, head: bytes, body: bytes) -> tuple[int, dict, bytes | None]:
        conn = await self._connection(replica)
        try:
            status, headers, data, reusable = await conn.request(head + b"%d\r\n\r\n" % len(body) + body,
                                                                 self.endpoint.max_reply_bytes)
        except BaseException:  # includes the timeout's cancellation: the connection is now unusable
            conn.close()
            raise
        if reusable and not self._closed:
            replica.idle.append(conn)
        else:
            conn.close()
        return status, headers, data

    @staticmethod
    async def _connection(replica: Replica) -> HttpConnection:
        while replica.idle:
            conn = replica.idle.pop()
            if conn.usable():  # else the server closed it while idle
                return conn
            conn.close()
        return await HttpConnection.open(replica.host, replica.port, replica.ssl)

    # ---- probing a replica that was taken out

    def _start_probe(self, replica: Replica) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._probe(replica))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, replica: Replica) -> None:
        """GET <base_url>/models after `probe_s`, doubling while it fails; readmit the replica when it answers.
        Real time, not `sleep`: a probe is the replica's, never a request's, wait."""
        while not replica.healthy and not self._closed:
            await asyncio.sleep(replica.probe_delay)
            if replica.healthy:
                return
            if await self._alive(replica):
                log.info("LLM endpoint %s: replica %s is back", self.endpoint.name, replica.base_url)
                self.pool.readmit(replica)
                return
            replica.probe_delay = min(2 * replica.probe_delay, MAX_PROBE_S)

    async def _alive(self, replica: Replica) -> bool:
        head = (f"GET {replica.path}/models HTTP/1.1\r\nHost: {replica.host_header}\r\n{self._auth}"
                "Connection: close\r\n\r\n").encode()
        conn = None
        try:
            async with asyncio.timeout(min(self.endpoint.timeout_s, 10.0)):
                conn = await HttpConnection.open(replica.host, replica.port, replica.ssl)
                status, _, _, _ = await conn.request(head, 1 << 20)
            return 200 <= status < 300
        except (OSError, EOFError, BadResponse):
            return False
        finally:
            if conn is not None:
                conn.close()

    def _result(self, data: bytes) -> ChatResult:
        """The completion in `data`; BadResponse if it is not one, LLMError if a field is over the cap."""
        try:
            resp = orjson.loads(data)
            choice = resp["choices"][0]
            msg = choice["message"]
            content = msg.get("content") or ""
            raw_calls = msg.get("tool_calls") or []
            reasoning = msg.get("reasoning_content") or msg.get("reasoning") or None
            usage = resp.get("usage") or {}
            prompt, completion = _tokens(usage.get("prompt_tokens")), _tokens(usage.get("completion_tokens"))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise BadResponse(f"not a chat completion: {_snippet(data)}") from None
        if not (isinstance(content, str) and isinstance(raw_calls, list) and isinstance(reasoning, (str, type(None)))):
            raise BadResponse(f"not a chat completion (a field has the wrong type): {_snippet(data)}")
        cap = self.endpoint.max_content_chars
        if len(content) > cap or (raw_calls and any(  # what roles act on; reasoning only counts in the byte cap
                isinstance(tc, dict) and isinstance(fn := tc.get("function"), dict)
                and isinstance(args := fn.get("arguments"), str) and len(args) > cap for tc in raw_calls)):
            raise LLMError("reply_too_large", self._message(f"reply content over max_content_chars={cap}"),
                           fatal=False)
        tool_calls = _native_tool_calls(raw_calls) if raw_calls else []
        if "<tool_call>" in content:
            content, text_calls = parse_text_tool_calls(content, first_id=len(tool_calls))
            tool_calls += text_calls
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        finish = choice.get("finish_reason")
        return ChatResult(content, tool_calls, finish if isinstance(finish, str) else None, prompt, completion,
                          0.0, reasoning)


# ---------------------------------------------------------------------------------- JSON replies

_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array",
               dict: "object"}


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in `text`, tolerating prose and ``` fences around it."""
    value = _first_json(text, "{")
    return value if isinstance(value, dict) else None


def extract_json_value(text: str) -> dict | list | None:
    """The first JSON object or array in `text` (whichever opens first), tolerating prose and fences."""
    starts = [i for i in (text.find("{"), text.find("[")) if i != -1]
    return _first_json(text, text[min(starts)]) if starts else None


def _first_json(text: str, opener: str) -> dict | list | None:
    whole = text.strip()
    if whole[:1] == opener:  # the usual reply, all JSON: the scan below would find this same value
        try:
            return orjson.loads(whole)
        except orjson.JSONDecodeError:
            pass
    closer = "}" if opener == "{" else "]"
    start = text.find(opener)
    while start != -1:
        end = _matching_close(text, start, opener, closer)
        if end is None:
            return None  # unbalanced: nothing after this can close either
        try:
            return orjson.loads(text[start:end + 1])
        except orjson.JSONDecodeError:
            pass
        start = text.find(opener, start + 1)
    return None


_JSON_TOKENS = re.compile(r'\\.|["{}\[\]]', re.S)  # an escape pair, a quote, a brace or a bracket


def _matching_close(text: str, start: int, opener: str, closer: str) -> int | None:
    depth, in_string = 0, False
    for m in _JSON_TOKENS.finditer(text, start):
        token = m.group()
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token == opener:
            depth += 1
        elif token == closer:
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def _type_name(t: type) -> str:
    return _TYPE_NAMES.get(t, t.__name__)


def _has_type(value: Any, t: type) -> bool:
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def _check_json(result: ChatResult, required: dict[str, type]) -> tuple[dict | None, str, str]:
    """(object, "", "") when the reply is usable, else (None, reason, what to tell the model)."""
    if not result.content.strip():
        return None, "empty_reply", "it was empty"
    obj = extract_json_object(result.content)
    if obj is None:
        if result.finish_reason == "length":
            return None, "truncated", "it was cut off before the JSON object ended; keep it short"
        return None, "malformed_json", "it did not contain a valid JSON object"
    for key, t in required.items():
        if key not in obj:
            return None, f"missing_key:{key}", f'the key "{key}" is missing'
        if not _has_type(obj[key], t):
            value = obj[key]
            got = "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)
            return None, f"wrong_type:{key}", f'"{key}" must be a {_type_name(t)}, not {got}'
    return obj, "", ""


async def chat_json(client: LLMClient, messages: list[dict], *, required: dict[str, type],
                    sampling: Sampling | None = None, usage: dict | None = None,
                    cache_scope: CacheScope | None = None) -> tuple[dict | None, str]:
    """Ask for a JSON object with `required` keys and types; repair a bad reply once.

    Returns (obj, "ok"), (obj, "repaired"), or (None, reason) with the reason of the last reply:
    empty_reply | truncated | malformed_json | missing_key:<k> | wrong_type:<k>. LLMError propagates.
    `usage`, if given, accumulates calls and tokens of both requests (per-dialogue accounting).
    """
    async def request(msgs: list[dict]) -> ChatResult:
        result = await client.chat(msgs, sampling=sampling, cache_scope=cache_scope)
        if usage is not None:
            usage["calls"] = usage.get("calls", 0) + 1
            usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + result.prompt_tokens
            usage["completion_tokens"] = usage.get("completion_tokens", 0) + result.completion_tokens
        return result

    result = await request(messages)
    obj, reason, problem = _check_json(result, required)
    if obj is not None:
        return obj, "ok"
    keys = ", ".join(f'"{k}" ({_type_name(t)})' for k, t in required.items())
    ask = (f"Your reply could not be used: {problem}. Reply with only a JSON object with these keys: "
           f"{keys}. No prose, no code fences.")
    repair = [*messages, {"role": "assistant", "content": result.content}, {"role": "user", "content": ask}]
    obj, reason, _ = _check_json(await request(repair), required)
    return (obj, "repaired") if obj is not None else (None, reason)
