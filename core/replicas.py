"""The replicas behind one endpoint: which one takes the next request, and which are out.

An endpoint lists one or more base URLs. `ReplicaPool.acquire()` waits until both limits allow another
request (the endpoint's adaptive total, `AdaptiveLimit`, and each replica's own cap), then hands out the
least-loaded healthy replica; waiters are served first come, first served. A replica that fails
`EJECT_AFTER` requests in a row (connection refused or reset, timeout, 5xx, garbage) is taken out: it gets
no requests until a probe (GET <base_url>/models, run by the client) answers, after `probe_s`, doubling up
to `MAX_PROBE_S` while it keeps failing. When every replica is out, requests
keep going to them, so that an endpoint that is down fails its requests (and stops the run) as a single URL does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from toolturn.core.adaptive_limit import AdaptiveLimit, Ticket

EJECT_AFTER = 2  # failures in a row; one alone may be the request's own bad luck
MAX_PROBE_S = 30.0


@dataclass
class Replica:
    base_url: str
    host: str
    port: int
    ssl: ssl.SSLContext | None
    path: str  # the URL path of base_url, without a trailing slash
    cap: int
    index: int
    idle: list = field(default_factory=list)  # keep-alive connections (core/http.HttpConnection)
    in_flight: int = 0
    healthy: bool = True
    failures_in_row: int = 0
    probe_delay: float = 0.0
    requests: int = 0
    failures: int = 0
    ejections: int = 0
    latency_sum: float = 0.0
    successes: int = 0
    max_in_flight: int = 0

    @classmethod
    def parse(cls, base_url: str, cap: int, index: int) -> Replica:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port]/path, got {base_url!r}")
        return cls(base_url.rstrip("/"), url.hostname, url.port or (443 if url.scheme == "https" else 80),
                   ssl.create_default_context() if url.scheme == "https" else None, url.path.rstrip("/"), cap, index)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.ssl else 80
        return host + (f":{self.port}" if self.port != default else "")

    def stats(self) -> dict:
        return {"requests": self.requests, "answered": self.successes, "failures": self.failures,
                "ejections": self.ejections, "healthy": self.healthy, "max_in_flight": self.max_in_flight,
                "mean_latency_s": round(self.latency_sum / self.successes, 4) if self.successes else None}


@dataclass
class Slot:
    """One request's hold on the pool."""
    replica: Replica
    ticket: Ticket


class ReplicaPool:
    """Routing and both concurrency limits; the client reports each attempt's outcome back."""

    def __init__(self, replicas: list[Replica], limit: AdaptiveLimit, probe_s: float):
        self.replicas, self.limit, self.probe_s = replicas, limit, probe_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._next = 0  # round-robin start among equally loaded replicas
        self.on_eject = None  # set by the client: called with a replica just taken out (starts its probe)

    async def acquire(self) -> Slot:
        if not self._waiters:
            replica = self._pick()
            if replica is not None:
                return self._take(replica)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as we were cancelled
                self.release(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, slot: Slot) -> None:
        slot.replica.in_flight -= 1
        self.in_flight -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters, oldest first (after a release, a limit change or a replica's return)."""
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            replica = self._pick()
            if replica is None:
                return
            self._waiters.popleft().set_result(self._take(replica))

    def _pick(self) -> Replica | None:
        if self.in_flight >= self.limit.current():
            return None
        n = len(self.replicas)
        if n == 1:
            r = self.replicas[0]
            return r if r.in_flight < r.cap else None
        order = [self.replicas[(self._next + k) % n] for k in range(n)]
        healthy = [r for r in order if r.healthy]
        if not healthy:  # all out: the endpoint may be down; let requests find out (they fail and retry)
            healthy = order
        free = [r for r in healthy if r.in_flight < r.cap]
        if not free:
            return None
        return min(free, key=lambda r: r.in_flight / r.cap)

    def _take(self, replica: Replica) -> Slot:
        replica.in_flight += 1
        replica.requests += 1
        replica.max_in_flight = max(replica.max_in_flight, replica.in_flight)
        self.in_flight += 1
        self._next = (replica.index + 1) % len(self.replicas)
        return Slot(replica, self.limit.sent(self.in_flight))

    # ---- outcomes of one attempt

    def succeeded(self, slot: Slot, latency_s: float, completion_tokens: int) -> None:
        r = slot.replica
        r.failures_in_row, r.successes, r.latency_sum = 0, r.successes + 1, r.latency_sum + latency_s
        if not r.healthy:  # a request sent while all were out answered: it is back
            self.readmit(r)
        self.limit.succeeded(slot.ticket, latency_s, completion_tokens)

    def congested(self, slot: Slot, why: str) -> bool:
        return self.limit.congested(slot.ticket, why)

    def failed(self, slot: Slot) -> bool:
        """The replica failed this attempt (it is taken out after EJECT_AFTER in a row); True if another
        replica is healthy, so that the request may move there at once."""
        r = slot.replica
        r.failures += 1
        r.failures_in_row += 1
        if r.healthy and r.failures_in_row >= EJECT_AFTER and len(self.replicas) > 1:
            r.healthy = False
            r.ejections += 1
            r.probe_delay = self.probe_s
            for conn in r.idle:
                conn.close()
            r.idle.clear()
            if self.on_eject is not None:
                self.on_eject(r)
        self._next = (r.index + 1) % len(self.replicas)  # the next pick starts past it
        return any(x.healthy and x is not r for x in self.replicas)

    def readmit(self, replica: Replica) -> None:
        replica.healthy, replica.failures_in_row, replica.probe_delay = True, 0, 0.0
        self.wake()

    def stats(self) -> dict:
        return {r.base_url: r.stats() for r in self.replicas}
