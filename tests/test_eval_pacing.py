"""evaluate/pacing.py: what a server serves at once (known for managed servers, measured for external ones), the
probe that times one full-length request, and the settings derived from it; a failed probe changes nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mock_openai import MockServer, completion, hold_port

from toolturn.core.endpoints import EndpointConfig, parse_endpoint
from toolturn.core.llm import Endpoint, Sampling
from toolturn.evaluate.pacing import (
    PROBE_MARKER,
    PROBE_TOKENS,
    TIMEOUT_FACTOR,
    duration,
    known_slots,
    measure,
    probe_body,
    upper_bound_s,
)

SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_tokens=32,
                    generation_config=json.dumps({"do_sample": True, "max_new_tokens": 32}))


def spec(server: str, **more) -> EndpointConfig:
    return parse_endpoint({"server": server, "model": "m", "max_concurrency": 6, "timeout_s": 2.0, "max_retries": 0,
                           **more}, "endpoint")


def test_a_managed_transformers_server_serves_one_request_at_a_time():
    assert known_slots(spec("transformers")) == (1, "transformers serve generates one request at a time")
    assert known_slots(spec("transformers", extra_args=["--continuous-batching"]))[0] == 6
    assert known_slots(spec("vllm"))[0] == 6
    assert known_slots(spec("batched"))[0] == 6  # its default --max-batch 8, capped by max_concurrency
    assert known_slots(spec("batched", extra_args=["--max-batch", "4"]))[0] == 4
    assert known_slots(spec("batched", extra_args=["--max-batch=2"]))[0] == 2
    assert known_slots(spec("none")) is None  # an external server is probed
    # replicas the harness starts: each serves its own share
    assert known_slots(spec("transformers", replicas=2)) == (2, "transformers serve generates one request at a "
                                                                "time x 2 replicas")
    assert known_slots(spec("batched", replicas=2, extra_args=["--max-batch", "2"]))[0] == 4
    assert known_slots(spec("batched", replicas=2))[0] == 6  # capped by max_concurrency


def test_the_probe_streams_a_few_tokens_and_asks_for_all_of_them_where_the_server_allows_it():
    long = Sampling(temperature=1.0, top_p=1.0, max_tokens=256, generation_config=SAMPLING.generation_config)
    chat = probe_body("chat", "m", long, "transformers", 1000)
    config = json.loads(chat["generation_config"])
    assert (config["min_new_tokens"], config["max_new_tokens"], chat["max_tokens"]) == (32, 32, 32) and chat["stream"]
    assert PROBE_MARKER in chat["messages"][0]["content"] and len(chat["messages"][0]["content"]) == 1000
    assert probe_body("completions", "m", SAMPLING, "vllm", 500)["min_tokens"] == 32
    plain = probe_body("completions", "m", SAMPLING, "none", 500)
    assert "min_tokens" not in plain and "generation_config" not in plain and PROBE_MARKER in plain["prompt"]


class Serial:
    """A chat server that works on one request at a time, `seconds` each."""

    def __init__(self, seconds: float):
        self.seconds, self.lock = seconds, None

    async def __call__(self, request: dict) -> dict:
        self.lock = self.lock or asyncio.Lock()
        async with self.lock:
            await asyncio.sleep(self.seconds)
        return completion("1\n2\n3", completion_tokens=32)


def endpoint(server: MockServer) -> Endpoint:
    return Endpoint(base_url=server.base_url, model="m", max_concurrency=6, timeout_s=2.0)


def test_a_serial_server_is_measured_serial_and_its_timeout_follows_its_latency():
    with MockServer(Serial(0.6)) as server:
        pace = asyncio.run(measure(endpoint(server), spec("none"), SAMPLING, 2000))
    assert pace.slots == 1 and pace.in_flight(8) == 1 and "measured: two requests at once" in pace.slots_from
    assert pace.latency_s >= 0.6 and pace.timeout_s == max(2.0, TIMEOUT_FACTOR * pace.latency_s)
    assert pace.probe_error is None and pace.per_token_s is None  # an answer not streamed: its own time


def test_a_server_that_serves_requests_together_keeps_its_declared_concurrency():
    with MockServer(lambda request: completion("1"), latency_s=0.6) as server:  # concurrent, 0.6 s each
        pace = asyncio.run(measure(endpoint(server), spec("none"), SAMPLING, 2000))
        requests = len(server.requests)
    assert pace.slots == 6 and pace.in_flight(8) == 6 and pace.in_flight(3) == 3 and requests == 3


def test_a_failed_probe_keeps_the_endpoints_own_settings():
    held = hold_port()  # nothing listens there
    try:
        gone = Endpoint(base_url=f"http://127.0.0.1:{held.getsockname()[1]}/v1", model="m", timeout_s=2.0)
        pace = asyncio.run(measure(gone, spec("transformers"), SAMPLING, 2000))
    finally:
        held.close()
    assert (pace.slots, pace.latency_s, pace.timeout_s) == (1, None, 2.0) and pace.probe_error
    assert "not measured" in pace.line() and upper_bound_s(pace, 10, 4, 1) is None


def test_the_upper_bound_counts_rounds_of_work_in_flight():
    with MockServer(lambda request: completion("1")) as server:
        pace = asyncio.run(measure(endpoint(server), spec("vllm"), SAMPLING, 100))
    assert upper_bound_s(pace, 200, 6, 4) == 2 * 200 * pace.latency_s
    assert (duration(42), duration(600), duration(6 * 3600)) == ("42 s", "10 min", "6.0 h")


class Streaming:
    """A completions server that streams: the first token after `first_s`, then one every `per_token_s`."""

    def __init__(self, first_s: float, per_token_s: float):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                time.sleep(first_s)
                for i in range(body["max_tokens"]):
                    if i:
                        time.sleep(per_token_s)
                    self.wfile.write(f"data: {json.dumps({'choices': [{'text': str(i)}]})}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=owner.server.serve_forever, daemon=True).start()


def test_a_streamed_probe_times_the_prompt_and_the_tokens_and_extrapolates_to_the_longest_reply():
    server = Streaming(first_s=0.3, per_token_s=0.02)
    try:
        long = Sampling(temperature=1.0, top_p=1.0, max_tokens=512)
        pace = asyncio.run(measure(Endpoint(base_url=server.base_url, model="m", timeout_s=1.0), spec("vllm"), long,
                                   300, api="completions"))
    finally:
        server.server.shutdown()
    assert pace.probe_tokens == PROBE_TOKENS and pace.first_token_s >= 0.3 and pace.per_token_s >= 0.02
    assert pace.latency_s == pace.first_token_s + 511 * pace.per_token_s  # a 512-token reply, not the probe's 32
    assert pace.timeout_s == TIMEOUT_FACTOR * pace.latency_s and "then" in pace.line()
