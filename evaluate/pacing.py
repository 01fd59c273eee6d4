"""How hard an official benchmark may drive a model server: how many requests it serves at once, how long one
takes on it, and so how many requests to keep in flight and how long to wait for one (docs/evaluate.md, "Pace").

A batch suite measures each endpoint once, before its samples run (`measure`), and derives its settings:

- `slots`: requests the server works on at once. `transformers serve` generates one request at a time (its
  GenerateRunner) unless started with --continuous-batching; vLLM batches, up to `endpoint.max_concurrency`; the
  batched server (core/serve_batched.py) up to its --max-batch and `endpoint.max_concurrency`; an
  external server is probed: one request alone, then two at once, and if the slower of the pair took
  SERIAL_RATIO times as long as the one alone, it serves one at a time.
- `latency_s`: how long one request of `max_tokens` tokens after a prompt about as long as the suite's takes. The
  probe streams PROBE_TOKENS tokens after such a prompt (the server is told to produce them all where it allows
  it: `min_new_tokens` for transformers, `min_tokens` for vLLM and the batched server): the first token times
  the prompt, the others the pace of generation, and latency_s = first + (max_tokens - 1) x per token. A server
  that does not stream answers at once: latency_s is then that answer's time.
- `timeout_s`: max(endpoint.timeout_s, TIMEOUT_FACTOR x latency_s), the wait for one request.

The suite then keeps at most `slots` requests in flight (`in_flight`), so that no request waits in the server's
queue while its own timeout runs: a slow CPU makes an evaluation slow, not a run of infrastructure errors. A
probe that fails (an endpoint that is down, say) leaves the endpoint's own settings, and the samples meet the
failure themselves (infrastructure errors, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from toolturn.core.endpoints import EndpointConfig
from toolturn.core.llm import Endpoint, Sampling
from toolturn.core.servers import BATCHED_MAX_BATCH, flag_value

TIMEOUT_FACTOR = 4.0  # a request may take this many probe latencies before it is an infrastructure error
SERIAL_RATIO = 1.5  # two probes at once that take this much longer than one: the server serves one at a time
MIN_SERIAL_PROBE_S = 0.25  # below this a server is fast enough that its queue cannot cause a timeout
PROBE_TIMEOUT_S = 3600.0  # one probe request: a slow CPU is measured, not refused
PROBE_MAX_CHARS = 24_000  # the probe prompt (about 6k tokens): longer prompts are rare, and the factor covers them
PROBE_TOKENS = 32  # what the probe streams: enough to time generation, far fewer than a long reply
PROBE_MARKER = "toolturn pace probe"  # in every probe prompt (tests tell probe requests apart by it)
_FILLER = f"This text is a {PROBE_MARKER}: it measures how long one request takes on this server. "


@dataclass(frozen=True)
class Timing:
    """One probe request as it arrived."""
    total_s: float
    first_s: float | None  # the first token (None: the answer was not streamed)
    per_token_s: float | None  # each later token (None: fewer than two streamed)
    tokens: int  # streamed chunks with text (about one token each)

    def full_request_s(self, max_tokens: int) -> float:
        """A request of `max_tokens` tokens after the same prompt, from this one."""
        if self.first_s is None or self.per_token_s is None:
            return self.total_s
        return self.first_s + (max_tokens - 1) * self.per_token_s


@dataclass(frozen=True)
class Pace:
    slots: int  # requests the server works on at once
    slots_from: str  # how that is known
    latency_s: float | None  # one request of max_tokens tokens (None: not measured)
    timeout_s: float  # the wait for one request
    prompt_chars: int  # the probe prompt's length
    max_tokens: int  # the requests' longest reply
    first_token_s: float | None = None  # measured: the probe's first token
    per_token_s: float | None = None  # measured: each later token
    probe_tokens: int = 0  # measured: the tokens the probe streamed
    probe_error: str | None = None

    def in_flight(self, wanted: int) -> int:
        """Requests to keep in flight: what the caller wants, never more than the server serves at once."""
        return max(1, min(int(wanted), self.slots))

    def line(self) -> str:
        """One line for a person: what was measured and what follows from it."""
        if self.latency_s is None:
            return (f"serves {self.slots} at once ({self.slots_from}); not measured ({self.probe_error}): "
                    f"timeout {self.timeout_s:g} s per request (the endpoint's)")
        how = ("the probe's answer, not streamed" if self.per_token_s is None else
               f"measured: first token after {duration(self.first_token_s)}, then {self.per_token_s:.2f} s a token")
        return (f"serves {self.slots} at once ({self.slots_from}); one request of up to {self.max_tokens} tokens "
                f"after a {self.prompt_chars}-character prompt takes about {duration(self.latency_s)} ({how}), so a "
                f"request may take {duration(self.timeout_s)} before it is an infrastructure error")

    def to_dict(self) -> dict:
        return asdict(self)


def duration(seconds: float) -> str:
    """42 s, 17 min, 6.3 h."""
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def upper_bound_s(pace: Pace, requests_each: int, items: int, in_flight: int) -> float | None:
    """Seconds for `items` units of work of at most `requests_each` requests each, `in_flight` at once (each of those
    served by its own slot), at the probe's latency; None when nothing was measured."""
    if pace.latency_s is None:
        return None
    return math.ceil(items / in_flight) * requests_each * pace.latency_s


def known_slots(spec: EndpointConfig) -> tuple[int, str] | None:
    """What a managed server serves at once (all its replicas), known from how it runs; None for an external
    server (probed)."""
    n, each = spec.replicas, "" if spec.replicas == 1 else f" x {spec.replicas} replicas"
    if spec.server == "transformers":
        if "--continuous-batching" in spec.extra_args:
            return spec.max_concurrency, "transformers serve --continuous-batching: endpoint.max_concurrency"
        return min(n, spec.max_concurrency), f"transformers serve generates one request at a time{each}"
    if spec.server == "vllm":
        return spec.max_concurrency, "vLLM batches: endpoint.max_concurrency"
    if spec.server == "batched":
        batch = int(flag_value(spec.extra_args, "--max-batch") or BATCHED_MAX_BATCH)
        return (min(batch * n, spec.max_concurrency),
                f"the batched server decodes {batch} at once (--max-batch){each}, endpoint.max_concurrency "
                f"{spec.max_concurrency}")
    return None


def _prompt(chars: int) -> str:
    chars = max(len(_FILLER), min(int(chars), PROBE_MAX_CHARS))
    return (_FILLER * (chars // len(_FILLER) + 1))[:chars]


def probe_body(api: str, model: str, sampling: Sampling, server: str, prompt_chars: int) -> dict:
    """One probe request: `api` is "chat" (/chat/completions) or "completions" (/completions, BFCL's prompting
    path); it streams min(PROBE_TOKENS, sampling.max_tokens) tokens, and tells the server to produce them all
    where it can."""
    ask = "Count upwards from 1, one number per line, and do not stop."
    tokens = min(PROBE_TOKENS, sampling.max_tokens)
    body: dict = {"model": model, "max_tokens": tokens, "temperature": sampling.temperature,
                  "top_p": sampling.top_p, "seed": 0, "stream": True}
    if api == "chat":
        body["messages"] = [{"role": "system", "content": _prompt(prompt_chars)}, {"role": "user", "content": ask}]
    else:
        body["prompt"] = f"{_prompt(prompt_chars)}\n{ask}\n"
    if server == "transformers" and sampling.generation_config:
        config = json.loads(sampling.generation_config)
        body["generation_config"] = json.dumps({**config, "min_new_tokens": tokens, "max_new_tokens": tokens},
                                               sort_keys=True)
    elif server in ("vllm", "batched"):
        body["min_tokens"] = tokens
    return body


def _text(chunk: dict) -> str:
    """The text of one streamed chunk (chat: the delta's content; completions: text)."""
    choice = (chunk.get("choices") or [{}])[0]
    return (choice.get("delta") or {}).get("content") or choice.get("text") or ""


def _post(url: str, body: dict, api_key: str | None, timeout_s: float) -> Timing:
    """One probe request, timed as its tokens arrive; raises on any failure."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {api_key or 'EMPTY'}"})
    t0 = time.monotonic()
    arrivals = []
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if "text/event-stream" not in response.headers.get("Content-Type", ""):
            json.loads(response.read())  # a server that does not stream: one answer
            return Timing(time.monotonic() - t0, None, None, 0)
        for raw in response:
            data = raw.decode().strip().removeprefix("data:").strip()
            if data == "[DONE]":
                break
            if data and _text(json.loads(data)):
                arrivals.append(time.monotonic() - t0)
    total = time.monotonic() - t0
    if not arrivals:
        return Timing(total, None, None, 0)
    per_token = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else None
    return Timing(total, arrivals[0], per_token, len(arrivals))


def _in_daemon_thread(fn, *args) -> asyncio.Future:
    """`fn(*args)` in a daemon thread, as a future of the running loop. Not asyncio.to_thread: a run interrupted
    during a minutes-long probe must not wait for it (the loop's executor is joined at exit, a daemon is not)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(ok: bool, value) -> None:
        if future.done():  # cancelled: the run was interrupted
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            outcome = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for this any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, daemon=True).start()
    return future


async def measure(endpoint: Endpoint, spec: EndpointConfig, sampling: Sampling, prompt_chars: int, api: str = "chat") -> Pace:
    """The pace of the live `endpoint` (serving `spec`, the endpoint config) for requests with `sampling`."""
    url = endpoint.base_url.rstrip("/") + ("/chat/completions" if api == "chat" else "/completions")
    body = probe_body(api, endpoint.model, sampling, spec.server, prompt_chars)
    known = known_slots(spec)
    declared = spec.max_concurrency
    base = dict(prompt_chars=len(body.get("prompt") or body["messages"][0]["content"]), max_tokens=sampling.max_tokens)

    def post() -> asyncio.Future:
        return _in_daemon_thread(_post, url, body, endpoint.api_key, PROBE_TIMEOUT_S)

    try:
        timing = await post()
        alone = timing.total_s
        if known is not None:
            slots, source = known
        elif alone < MIN_SERIAL_PROBE_S:
            slots, source = declared, (f"endpoint.max_concurrency: it answered in {alone:.2f} s, too fast for a queue "
                                       f"to matter")
        else:
            ratio = max(t.total_s for t in await asyncio.gather(post(), post())) / alone
            pair = f"two requests at once took {ratio:.1f}x as long as one"
            slots, source = (1, f"measured: {pair}") if ratio >= SERIAL_RATIO else (declared, f"endpoint.max_concurrency: {pair}")
    except (OSError, ValueError, urllib.error.URLError) as exc:  # down, refusing, timing out, not JSON
        slots, source = known or (declared, "endpoint.max_concurrency")
        return Pace(slots, source, None, endpoint.timeout_s, probe_error=f"{type(exc).__name__}: {exc}"[:300], **base)
    latency = timing.full_request_s(sampling.max_tokens)
    return Pace(slots, source, latency, max(endpoint.timeout_s, TIMEOUT_FACTOR * latency), first_token_s=timing.first_s,
                per_token_s=timing.per_token_s, probe_tokens=timing.tokens, **base)
