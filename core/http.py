"""HTTP/1.1 client connections on an asyncio Protocol: one request at a time, keep-alive, size caps.

The LLM client's transport (`core/llm.py`). A Protocol parses a response as its bytes arrive and wakes the request
once, when the response is complete; asyncio's streams wake it for every `readuntil`/`readexactly` and copy the
bytes through a StreamReader. At 1,024 requests in flight that is 36 instead of 56 us of CPU per call on this
project's 2-core machine, for a 7 KB request and a small reply (benchmarks/orchestration.py charts what is left).

`HttpConnection.request(data, limit)` sends one request and returns `(status, headers, body, reusable)`: headers
lower-cased, and body None when it is over `limit` bytes however it is framed (Content-Length, chunked, or the
server closing the connection): reading stops at the cap and the connection is then not reusable. Bytes past the
end of one response stay for the next request to read, as on any HTTP/1.1 connection. A response head over
HEAD_LIMIT, or bytes that are not HTTP, raise `BadResponse`; a server that closes the connection before the
response ends raises EOFError (ConnectionResetError and the like when the connection breaks).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module

HEAD_LIMIT = 1 << 16  # bytes of a response's status line and headers (asyncio streams' default limit)


class BadResponse(Exception):
    """The server's bytes are not the response expected: not HTTP/1.x here, not a chat completion in core/llm.py."""


Response = tuple[int, dict[str, str], bytes | None, bool]


class HttpConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._limit = 0
        self._eof = False
        self._lost: Exception | None = None
        self._closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._start()

    @classmethod
    async def open(cls, host: str, port: int, ssl: ssl_module.SSLContext | None = None) -> HttpConnection:
        _, conn = await asyncio.get_running_loop().create_connection(cls, host, port, ssl=ssl)
        return conn

    def usable(self) -> bool:
        """Not closed by either side (a connection the server closed while idle is not reused)."""
        return not self._eof and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def request(self, data: bytes, limit: int) -> Response:
        if self._waiter is not None:
            raise RuntimeError("a request is already in flight on this connection")
        self._start()
        self._limit = limit
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            self._advance()  # bytes left from before, or a close already seen
            return await self._waiter
        finally:
            self._waiter = None

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is not None:
            self._advance()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiter is not None:
            self._advance()
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof, self._lost = True, exc
        if self._waiter is not None:
            self._advance()
        if not self._closed.done():
            self._closed.set_result(None)

    # ---- parsing one response

    def _start(self) -> None:
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep = False
        self._framing = ""  # length | chunked | close, once the head is read
        self._pos = 0  # where parsing goes on in _buf
        self._length = 0  # Content-Length, or the size of the chunk being read
        self._in_chunk = False
        self._trailers = False
        self._parts: list[bytes] = []
        self._total = 0

    def _advance(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self._parse()
        except (BadResponse, ValueError) as exc:
            waiter.set_exception(BadResponse(str(exc)) if isinstance(exc, ValueError) else exc)
            return
        if response is not None:
            waiter.set_result(response)
        elif self._eof:
            waiter.set_exception(self._lost or EOFError("the server closed the connection before the response ended"))

    def _parse(self) -> Response | None:
        buf = self._buf
        if not self._framing:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HEAD_LIMIT:
                    raise BadResponse(f"response head over {HEAD_LIMIT} bytes")
                return None
            self._head(bytes(buf[:end]).decode("latin-1"))
            self._pos = end + 4
        if self._framing == "length":
            if self._length > self._limit:
                return self._over_cap()
            if len(buf) - self._pos < self._length:
                return None
            return self._done(bytes(buf[self._pos:self._pos + self._length]), self._pos + self._length)
        if self._framing == "chunked":
            return self._chunked()
        if len(buf) - self._pos > self._limit:  # framed by the server closing the connection
            return self._over_cap()
        if not self._eof:
            return None
        self._keep = False
        return self._done(bytes(buf[self._pos:]), len(buf))

    def _head(self, text: str) -> None:
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/") or not rest[:3].isdigit():
            raise BadResponse(f"not an HTTP response: {lines[0][:80]!r}")
        self._status = int(rest[:3])
        headers = self._headers
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get("connection", "").lower()
        self._keep = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing = "chunked"
        elif "content-length" in headers:
            self._framing, self._length = "length", int(headers["content-length"])
        else:
            self._framing = "close"

    def _chunked(self) -> Response | None:
        buf = self._buf
        while True:
            if self._in_chunk:
                if len(buf) - self._pos < self._length + 2:
                    return None
                self._parts.append(bytes(buf[self._pos:self._pos + self._length]))
                self._pos += self._length + 2
                self._in_chunk = False
                continue
            eol = buf.find(b"\r\n", self._pos)
            if eol < 0:
                if len(buf) - self._pos > HEAD_LIMIT:
                    raise BadResponse(f"a chunk-size or trailer line over {HEAD_LIMIT} bytes")
                return None
            line, self._pos = bytes(buf[self._pos:eol]), eol + 2
            if self._trailers:  # they count against the cap too
                if not line:
                    return self._done(b"".join(self._parts), self._pos)
                self._total += len(line) + 2
            else:
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    self._trailers = True
                    continue
                self._total += size
                self._length, self._in_chunk = size, True
            if self._total > self._limit:
                return self._over_cap()

    def _over_cap(self) -> Response:
        self._buf.clear()
        return self._status, self._headers, None, False

    def _done(self, body: bytes, end: int) -> Response:
        del self._buf[:end]
        return self._status, self._headers, body, self._keep
