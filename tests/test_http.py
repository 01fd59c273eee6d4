"""core/http.py: the HTTP/1.1 response parser, fed byte by byte and all at once (the sockets, faults included, are
tests/test_endpoint_faults.py's)."""

import asyncio

import pytest
from toolturn.core.http import HEAD_LIMIT, BadResponse, HttpConnection


class Wire(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.sent, self.closing = [], False

    def write(self, data):
        self.sent.append(data)

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True


def exchange(replies: list[bytes], *, limit=1 << 20, piece=None, eof=False):
    """One connection, one request per reply; each reply is fed `piece` bytes at a time (all at once: None) once the
    request is sent. Returns what each request gave (a response or the exception) and the connection."""
    async def main():
        conn = HttpConnection()
        conn.connection_made(Wire())
        out = []
        for i, reply in enumerate(replies):
            task = asyncio.ensure_future(conn.request(b"GET / HTTP/1.1\r\n\r\n", limit))
            await asyncio.sleep(0)  # the request is written and waits
            step = piece or max(1, len(reply))
            for k in range(0, len(reply), step):
                conn.data_received(reply[k:k + step])
            if eof and i == len(replies) - 1:
                conn.eof_received()
            try:
                out.append(await task)
            except Exception as exc:  # noqa: BLE001 - what the request raised is the result under test
                out.append(exc)
        return out, conn
    return asyncio.run(main())


BODY = b'{"choices": []}'
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Thing: a:b\r\n\r\n%s" % (len(BODY), BODY)
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\n{\"cho\r\nA\r\nices\": []}\r\n0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_every_framing_parses_whole_or_in_pieces(piece):
    (length, chunked), conn = exchange([LENGTH, CHUNKED], piece=piece)
    assert length == (200, {"content-length": str(len(BODY)), "x-thing": "a:b"}, BODY, True)
    assert chunked[2] == BODY and chunked[3] is True and conn.usable()
    (closed,), conn = exchange([b"HTTP/1.1 200 OK\r\n\r\n" + BODY], piece=piece, eof=True)
    assert closed[2:] == (BODY, False) and not conn.usable()


def test_keep_alive_follows_the_version_and_the_connection_header():
    replies = [b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
               b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n"]
    out, _ = exchange(replies)
    assert [r[3] for r in out] == [False, False, True]


def test_bytes_past_a_response_are_the_next_request_s_to_read():
    out, _ = exchange([LENGTH + b"junk\r\n\r\n", b""])
    assert out[0][2] == BODY and isinstance(out[1], BadResponse) and "not an HTTP response" in str(out[1])


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 10,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 2000 + b"x" * 10,
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" + b"T: " + b"t" * 2000 + b"\r\n\r\n",
], ids=["length", "chunked", "close", "trailers"])
def test_a_body_over_the_cap_is_none_and_ends_the_connection(reply):
    (response,), _ = exchange([reply], limit=1000, piece=64)
    assert response[2] is None and response[3] is False


@pytest.mark.parametrize("reply, raised, says", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", EOFError, "before the response ended"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", EOFError, "before the response ended"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", BadResponse, "not an HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", BadResponse, "invalid literal"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadResponse, "invalid literal"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"x" * HEAD_LIMIT, BadResponse, f"over {HEAD_LIMIT} bytes"),
], ids=["cut-body", "cut-head", "not-http", "bad-length", "bad-chunk-size", "huge-head"])
def test_a_broken_response_raises_what_names_it(reply, raised, says):
    (response,), _ = exchange([reply], eof=True)
    assert isinstance(response, raised) and says in str(response)
