"""A fast, scripted OpenAI-compatible chat-completions server for tests and benchmarks.

Raw HTTP/1.1 keep-alive on `asyncio.start_server` (no web framework), so that one core sustains
1000+ concurrent connections and the server is not what a client benchmark measures.

    with MockServer(Script(Fault.status(500), completion("hi"))) as server:
        url = server.base_url  # http://127.0.0.1:<port>/v1
        ...
    server.requests  # the request bodies received, parsed

Standalone (a separate process, so that client and server CPU do not mix in a benchmark):

    python tests/mock_openai.py --port 0 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import socket
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson


@dataclass
class Fault:
    """Something other than a normal answer. Build with the class methods."""

    kind: str  # status | hang | close | raw | endless | stall
    code: int = 500
    body: str = '{"error": {"message": "mock fault", "type": "server_error"}}'
    retry_after: float | str | None = None
    seconds: float = 0.0
    data: bytes = b""
    framing: str = "length"  # length | chunked | close
    declared: int | None = None
    keep: bool = False

    @classmethod
    def status(cls, code: int, body: str | None = None, retry_after: float | str | None = None) -> Fault:
        """An error status; `retry_after` goes out as the Retry-After header (seconds, or a string
        such as an HTTP-date)."""
        return cls("status", code=code, retry_after=retry_after,
                   **({"body": body} if body is not None else {}))

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Sleep, then close the connection without answering."""
        return cls("hang", seconds=seconds)

    @classmethod
    def close(cls) -> Fault:
        """Close the connection without answering."""
        return cls("close")

    @classmethod
    def truncated_body(cls) -> Fault:
        """Send headers whose Content-Length exceeds the body, then close."""
        body = orjson.dumps(completion("this body is cut short"))
        return cls.raw(body, declared=len(body) + 100)

    @classmethod
    def raw(cls, data: bytes, framing: str = "length", declared: int | None = None, keep: bool = False) -> Fault:
        """A 200 whose body is `data` (any bytes), framed by Content-Length, as one chunk, or by closing
        the connection. `declared` replaces the length that the header or the chunk announces (the
        terminating chunk then is not sent). `keep`: leave the connection open afterwards (else the
        reply says Connection: close)."""
        return cls("raw", data=data, framing=framing, declared=declared, keep=keep and framing != "close")

    @classmethod
    def endless(cls, framing: str = "length") -> Fault:
        """A 200 whose body never ends (Content-Length 2**62, endless chunks, or endless until close)."""
        return cls("endless", framing=framing)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Send the headers of a 200, then nothing for `seconds`, then close."""
        return cls("stall", seconds=seconds)


Reply = dict | Fault
Handler = Callable[[dict], Reply | Awaitable[Reply]]


def completion(content: str | None = None, tool_calls: list[dict] | None = None,
               finish_reason: str | None = "stop", prompt_tokens: int = 10,
               completion_tokens: int = 5, model: str = "mock", reasoning_content: str | None = None) -> dict:
    """A valid chat-completion response. tool_calls: [{"name", "arguments": dict | str, "id"?}];
    reasoning_content: what a server with a reasoning parser returns beside the content (a thinking model)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if tool_calls:
        message["tool_calls"] = [
            {"id": tc.get("id", f"call_mock_{i}"), "type": "function",
             "function": {"name": tc["name"], "arguments": tc["arguments"] if isinstance(tc["arguments"], str)
                          else orjson.dumps(tc["arguments"]).decode()}}
            for i, tc in enumerate(tool_calls)]
    return {"id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class Script:
    """A handler that answers with `steps` in order (dicts, Faults, or callables of the request),
    then keeps repeating the last step. `calls` counts the requests it answered."""

    def __init__(self, *steps: Reply | Callable[[dict], Reply]):
        if not steps:
            raise ValueError("Script needs at least one step")
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, request: dict) -> Reply:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return step(request) if callable(step) else step


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            413: "Content Too Large", 422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


class MockServer:
    """Serves POST /v1/chat/completions through `handler`, plus GET /v1/models and /health.

    Counters, readable from any thread: `requests` (parsed bodies, if `record`), `last_headers`,
    `connections` (accepted), `closed` (connections ended), `in_flight` and `max_in_flight` (chat
    requests being answered).
    `chunked=True` answers with Transfer-Encoding: chunked; `keep_alive=False` closes after each.
    """

    def __init__(self, handler: Handler, latency_s: float = 0.0, *, model: str = "mock",
                 chunked: bool = False, keep_alive: bool = True, record: bool = True):
        self.handler, self.latency_s, self.model = handler, latency_s, model
        self.chunked, self.keep_alive, self.record = chunked, keep_alive, record
        self.requests: list[dict] = []
        self.last_headers: dict[str, str] = {}  # of the last chat request, if `record`
        self.connections = self.closed = self.in_flight = self.max_in_flight = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle

    def start(self, port: int = 0) -> str:
        """Serve from a background thread with its own event loop; returns the base URL."""
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.listen(port))
            started.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="mock-openai", daemon=True)
        self._thread.start()
        started.wait(10)
        return self.base_url

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def drop_connections(self) -> None:
        """Close every open connection, as a server does with idle keep-alive ones, and keep listening."""
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(10)

    def __enter__(self) -> MockServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def listen(self, port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=4096, reuse_port=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.base_url

    async def shutdown(self) -> None:
        """Stop listening and drop every open connection."""
        self._server.close()
        await self._drop()
        await self._server.wait_closed()

    async def _drop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            writer.transport.abort()
        finally:
            writer.close()
            self._tasks.discard(task)
            self.closed += 1

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection should close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed the connection
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        client_close = headers.get("connection", "").lower() == "close"
        body = await reader.readexactly(length) if length else b""
        keep = self.keep_alive and not client_close
        if method == "GET" and path in ("/health", "/v1/models", "/models"):
            out = {} if path == "/health" else {"object": "list", "data": [{"id": self.model, "object": "model"}]}
            self._respond(writer, 200, orjson.dumps(out), keep)
        elif method == "POST" and path.endswith("/chat/completions"):
            if self.record:
                self.last_headers = headers
            reply = await self._handle(orjson.loads(body))
            if isinstance(reply, Fault):
                return await self._fault(writer, reply, keep)
            self._respond(writer, 200, orjson.dumps(reply), keep)
        else:
            self._respond(writer, 404, b'{"error": {"message": "not found"}}', keep)
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()
        return keep

    async def _handle(self, request: dict) -> Reply:
        if self.record:
            self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            reply = self.handler(request)
            return await reply if inspect.isawaitable(reply) else reply
        finally:
            self.in_flight -= 1

    async def _fault(self, writer: asyncio.StreamWriter, fault: Fault, keep: bool) -> bool:
        if fault.kind == "status":
            after = fault.retry_after
            extra = "" if after is None else f"Retry-After: {after if isinstance(after, str) else f'{after:g}'}\r\n"
            self._respond(writer, fault.code, fault.body.encode(), keep, extra)
            return keep
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        elif fault.kind == "stall":
            writer.write(head + b"Content-Length: 100\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(fault.seconds)
        elif fault.kind == "raw":
            size = len(fault.data) if fault.declared is None else fault.declared
            head += b"" if fault.keep else b"Connection: close\r\n"
            if fault.framing == "chunked":
                end = b"0\r\n\r\n" if fault.declared is None else b""
                body = b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%s" % (size, fault.data, end)
            elif fault.framing == "close":
                body = b"\r\n" + fault.data
            else:
                body = b"Content-Length: %d\r\n\r\n%s" % (size, fault.data)
            writer.write(head + body)
            await writer.drain()
            return fault.keep and keep
        elif fault.kind == "endless":
            piece = b"x" * 65536
            writer.write(head + {"length": b"Content-Length: %d\r\n\r\n" % 2 ** 62,
                                 "chunked": b"Transfer-Encoding: chunked\r\n\r\n",
                                 "close": b"Connection: close\r\n\r\n"}[fault.framing])
            if fault.framing == "chunked":
                piece = b"%x\r\n%s\r\n" % (len(piece), piece)
            while not writer.is_closing():  # until the client goes away (drain then raises)
                writer.write(piece)
                await writer.drain()
        elif fault.kind != "close":
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        return False

    def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, keep: bool,
                 extra_headers: str = "") -> None:
        close = "" if keep else "Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: application/json\r\n{extra_headers}{close}")
        if self.chunked:  # two chunks, to exercise the client's chunk loop
            mid = len(body) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:mid], body[mid:]) if c)
            writer.write(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        else:
            writer.write(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def hold_port() -> socket.socket:
    """A bound socket that keeps its port for MockServers (they listen with SO_REUSEPORT) and from every
    other program: a server can stop and come back at the same address, refusing connections meanwhile."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind(("127.0.0.1", 0))
    return held


def main() -> None:
    p = argparse.ArgumentParser(description="Serve a canned OpenAI-compatible chat reply.")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--content", default="Hello! How can I help you today?")
    p.add_argument("--world", action="store_true", help="play every toolturn role (tests/llm_world.py)")
    p.add_argument("--capacity", type=int, default=None,
                   help="answer 429 at once to a request that finds this many already in flight (a rate limit "
                        "hidden from the client; benchmarks/rate_limit.py); the others wait --latency")
    p.add_argument("--tau2-user", action="store_true",
                   help="play τ²'s user simulator that sends --content twice, then ###STOP### (6 messages per "
                        "simulation; benchmarks/tau2_floors.py)")
    args = p.parse_args()
    reply = completion(args.content)
    if args.world:
        from llm_world import World
        handler = World()
    elif args.tau2_user:
        def handler(request: dict) -> dict:
            # τ² flips the roles for its user simulator: "assistant" messages are the user's own, so it asks twice
            asked = sum(m["role"] == "assistant" for m in request["messages"]) > 1
            return completion("Thank you, that is all. ###STOP###" if asked else args.content)
    else:
        def handler(request: dict) -> dict:
            return reply

    latency = args.latency
    if args.capacity is not None:
        answer, latency = handler, 0.0

        async def handler(request: dict) -> Reply:
            if server.in_flight > args.capacity:
                return Fault.status(429, body='{"error": {"message": "rate limited", "type": "rate_limit"}}')
            await asyncio.sleep(args.latency)
            return answer(request)

    server = MockServer(handler, latency, record=False)

    async def serve() -> None:
        # the harness's own GC setting while dialogues run (generate/run.py _steady_gc): the 1,024-in-flight benchmark
        # parses thousands of request bodies a second here, and this process stands in for a server on other machines
        gc.freeze()
        gc.set_threshold(20_000, 10, 10)
        print(await server.listen(args.port), flush=True)
        await server._server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
