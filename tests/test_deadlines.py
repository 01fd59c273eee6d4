"""core/deadlines.py: per-request timeouts kept by one watchdog."""

import asyncio

import pytest
from toolturn.core.deadlines import Deadlines


def test_a_block_past_its_deadline_raises_timeout_error_and_no_earlier():
    async def main():
        deadlines = Deadlines(0.05, tick=0.01)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            with deadlines.limit():
                await asyncio.Event().wait()
        assert loop.time() - t0 >= 0.05
        assert not deadlines._live and deadlines._watchdog is None  # the watchdog ended on the tick that expired it
    asyncio.run(main())


def test_blocks_that_end_in_time_are_untouched_and_the_order_of_deadlines_holds():
    async def main():
        deadlines = Deadlines(0.2, tick=0.01)
        gate = asyncio.Event()
        results = []

        async def quick(i):
            with deadlines.limit():
                await gate.wait()
            results.append(i)

        async def slow():
            with deadlines.limit():
                await asyncio.Event().wait()

        stuck = asyncio.create_task(slow())
        quicks = [asyncio.create_task(quick(i)) for i in range(50)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*quicks)
        with pytest.raises(TimeoutError):
            await stuck
        assert sorted(results) == list(range(50))
    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def main():
        deadlines = Deadlines(10.0)
        entered = asyncio.Event()

        async def request():
            with deadlines.limit():
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(request())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._live
        deadlines.close()
    asyncio.run(main())


def test_an_expiry_inside_an_outer_cancellation_scope_is_a_timeout_only_for_its_own_block():
    async def main():
        deadlines = Deadlines(0.02, tick=0.005)
        with pytest.raises(TimeoutError):  # asyncio.timeout outside, ours inside: ours expires first
            async with asyncio.timeout(30):
                with deadlines.limit():
                    await asyncio.Event().wait()
        assert asyncio.current_task().cancelling() == 0
    asyncio.run(main())
