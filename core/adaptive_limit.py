"""The in-flight limit of one endpoint, adapted to what the endpoint answers (AIMD).

A request that ends in congestion (a 429, a timeout, or, when `latency_tolerance` is set, a latency per
completion token above that multiple of the best seen so far) cuts the limit to `DECREASE` of itself (rounded down); each
request that succeeds while the limit was in use adds 1/limit, so the limit grows by about one per round of
requests while the endpoint keeps up. It never leaves [minimum, maximum].

One congestion episode cuts the limit once: a signal counts only from a request sent after the last cut
(its `epoch` is current), as TCP counts one loss per window. The limit is driven only by the outcomes fed to
it, never by a clock, so it is tested by feeding outcomes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger("toolturn.llm")

DECREASE = 0.8  # the sawtooth then spans 0.8-1.0 of what the endpoint sustains: mean ~0.9 of it
LATENCY_SMOOTHING = 0.2  # weight of the newest request in the latency average


@dataclass
class Ticket:
    """What the limit knew when a request was sent."""
    epoch: int
    saturated: bool  # the limit was in use (in-flight requests reached it): success may grow it


class AdaptiveLimit:
    """`current()`: how many requests may be in flight now; `sent`/`succeeded`/`congested` feed it."""

    def __init__(self, maximum: int, *, minimum: int = 1, adaptive: bool = True,
                 latency_tolerance: float | None = None, name: str = ""):
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= min_concurrency <= max_concurrency, got {minimum} and {maximum}")
        self.maximum, self.minimum, self.adaptive = maximum, minimum, adaptive
        self.latency_tolerance, self.name = latency_tolerance, name
        self.value = float(maximum)
        self.epoch = 0
        self.decreases = self.increases = 0
        self.lowest = maximum
        self._latency: float | None = None  # smoothed seconds per completion token
        self._best_latency = math.inf

    def current(self) -> int:
        return int(self.value)

    def sent(self, in_flight: int) -> Ticket:
        """A request goes out; `in_flight` counts it."""
        return Ticket(self.epoch, in_flight >= self.current())

    def succeeded(self, ticket: Ticket, latency_s: float = 0.0, completion_tokens: int = 0) -> None:
        if not self.adaptive:
            return
        if self.latency_tolerance is not None and latency_s > 0:
            per_token = latency_s / max(1, completion_tokens)
            self._latency = per_token if self._latency is None else (
                LATENCY_SMOOTHING * per_token + (1 - LATENCY_SMOOTHING) * self._latency)
            self._best_latency = min(self._best_latency, self._latency)
            if self._latency > self.latency_tolerance * self._best_latency:
                self.congested(ticket, "latency")
                return
        if ticket.saturated and self.value < self.maximum:
            before = self.current()
            self.value = min(float(self.maximum), self.value + 1.0 / self.value)
            if self.current() != before:
                self.increases += 1
                self._log(before, "the endpoint keeps up")

    def congested(self, ticket: Ticket, why: str) -> bool:
        """A congestion signal; True if it cut the limit (the first of its episode, above the minimum)."""
        if not self.adaptive or ticket.epoch != self.epoch or self.value <= self.minimum:
            return False
        before = self.current()
        self.value = float(max(self.minimum, math.floor(self.value * DECREASE)))
        self.epoch += 1
        self.decreases += 1
        self.lowest = min(self.lowest, self.current())
        if self._latency is not None:  # the latency average restarts from the new load
            self._latency = None
        self._log(before, why)
        return True

    def above_minimum(self) -> bool:
        return self.adaptive and self.value > self.minimum

    def _log(self, before: int, why: str) -> None:
        if self.current() != before:
            log.info("LLM endpoint %s: concurrency limit %d -> %d (%s)", self.name or "", before, self.current(), why)

    def stats(self) -> dict:
        return {"adaptive": self.adaptive, "max": self.maximum, "min": self.minimum, "final": self.current(),
                "lowest": self.lowest, "decreases": self.decreases, "increases": self.increases}
