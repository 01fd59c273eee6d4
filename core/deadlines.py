"""Per-request timeouts for many requests in flight, kept by one watchdog task instead of one timer each.

`asyncio.timeout` makes a Timeout object and schedules a timer handle per request, then cancels it (a handle left
for the loop to sweep from its heap): at 1,024 requests in flight that was about 6% of the loop's CPU per LLM call
(benchmarks/orchestration.py). All requests of one client share one timeout length, so their deadlines come in the
order the requests start: a FIFO, and a watchdog that wakes every `tick` seconds and expires the requests at its
front whose deadline has passed. A timeout fires at most one tick late (by default a twentieth of the timeout).

As with `asyncio.timeout`, the expiry surfaces inside the block as TimeoutError, while a cancellation from anywhere
else stays a CancelledError. The watchdog runs only while a request is inside a block.

    deadlines = Deadlines(60.0)
    with deadlines.limit():
        await request()
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class Deadlines:
    def __init__(self, seconds: float, tick: float | None = None):
        self.seconds = seconds
        self.tick = tick if tick is not None else max(seconds / 20, 0.001)
        self._live: OrderedDict[_Limit, None] = OrderedDict()  # by deadline, as entered
        self._watchdog: asyncio.Task | None = None

    def limit(self) -> _Limit:
        """A context manager (plain `with`, inside a coroutine) bounding its block to `seconds`."""
        return _Limit(self)

    def close(self) -> None:
        """Stop the watchdog now rather than at its next tick, unless a block still needs it."""
        if self._watchdog is not None and not self._live:
            self._watchdog.cancel()

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._live:
                await asyncio.sleep(self.tick)
                now = loop.time()
                while self._live:
                    limit = next(iter(self._live))
                    if limit.when > now:
                        break
                    self._live.popitem(last=False)
                    limit.expired = True
                    limit.task.cancel()
        finally:
            self._watchdog = None


class _Limit:
    __slots__ = ("owner", "task", "when", "cancelling", "expired")

    def __init__(self, owner: Deadlines):
        self.owner = owner

    def __enter__(self) -> _Limit:
        owner, task = self.owner, asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.limit() must be used inside a task")
        loop = task.get_loop()
        self.task, self.when, self.cancelling, self.expired = task, loop.time() + owner.seconds, task.cancelling(), False
        owner._live[self] = None
        if owner._watchdog is None:
            owner._watchdog = loop.create_task(owner._watch(loop))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.owner._live.pop(self, None)
        # The watchdog cancels a task only while it waits inside the block (it cannot run at the same time), so an
        # expiry always arrives here as the block's CancelledError
        if self.expired and self.task.uncancel() <= self.cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
