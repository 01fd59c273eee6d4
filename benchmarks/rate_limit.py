"""Rate-limit benchmark: the adaptive concurrency limit against a server with a hidden capacity.

The mock server (tests/mock_openai.py --capacity C, its own process) answers 429 at once to a request that
finds C already in flight, and the others after L seconds, so it sustains at most C / L requests a second.
The client is configured with max_concurrency well above C and knows nothing of it. Dialogues (D in
flight, each `--calls` requests in a row) run for `--seconds`; a dialogue is dropped if any of its requests
fails for good (the dialogues under way at the end finish; their answers after `--seconds` are not counted).
We report the limit (its mean over the second half, sampled every 50 ms), the goodput
(answers a second over the second half) against C / L, the 429s, and the dialogues kept and dropped.

    python benchmarks/rate_limit.py [--capacity 24] [--latency 0.5] [--max-concurrency 96] [--seconds 30]

Last line: limit_vs_capacity=... goodput_ratio=... dropped=... rate_limited=...
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from toolturn.core.llm import Endpoint, LLMClient, LLMError  # noqa: E402

MSGS = [{"role": "user", "content": "hello"}]


async def drive(url: str, args) -> dict:
    endpoint = Endpoint(url, "mock", max_concurrency=args.max_concurrency, timeout_s=30, max_retries=4,
                        backoff_s=0.05)
    answers: list[float] = []
    limits: list[tuple[float, int]] = []
    kept = dropped = 0
    async with LLMClient(endpoint) as client:
        t0 = time.perf_counter()
        stop = t0 + args.seconds

        async def dialogue() -> None:
            nonlocal kept, dropped
            while time.perf_counter() < stop:
                try:
                    for _ in range(args.calls):
                        await client.chat(MSGS)
                        answers.append(time.perf_counter() - t0)
                    kept += 1
                except LLMError:
                    dropped += 1

        async def sampler() -> None:
            while time.perf_counter() < stop:
                limits.append((time.perf_counter() - t0, client.limit.current()))
                await asyncio.sleep(0.05)

        await asyncio.gather(sampler(), *(dialogue() for _ in range(args.dialogues)))
        stats = client.stats()
    return {"answers": sorted(answers), "limits": limits, "kept": kept, "dropped": dropped, "stats": stats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--capacity", type=int, default=24)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--max-concurrency", type=int, default=96)
    p.add_argument("--dialogues", type=int, default=96, help="dialogues in flight")
    p.add_argument("--calls", type=int, default=5, help="requests per dialogue")
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_openai.py"), "--port", "0", "--latency",
                             str(args.latency), "--capacity", str(args.capacity)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests")
    try:
        r = asyncio.run(drive(proc.stdout.readline().strip(), args))
    finally:
        proc.kill()
        proc.wait()
    half = args.seconds / 2
    settled = [lim for t, lim in r["limits"] if t >= half]
    mean_limit = statistics.fmean(settled)
    ideal = args.capacity / args.latency
    goodput = (bisect.bisect_left(r["answers"], args.seconds) - bisect.bisect_left(r["answers"], half)) / (args.seconds - half)
    st = r["stats"]
    rate_limited = st["retries"]  # every retry here answers a 429: nothing else fails
    print(f"rate-limit benchmark: hidden capacity {args.capacity} in flight, latency {args.latency:g} s "
          f"(ideal {ideal:.0f} req/s), client max_concurrency {args.max_concurrency}, {args.dialogues} dialogues "
          f"in flight x {args.calls} calls, {args.seconds:g} s")
    rows = [["limit, mean of 2nd half", f"{mean_limit:.1f}", f"{mean_limit / args.capacity:.3f} of capacity"],
            ["limit, min-max of 2nd half", f"{min(settled)}-{max(settled)}", ""],
            ["goodput, 2nd half (req/s)", f"{goodput:.0f}", f"{goodput / ideal:.3f} of ideal"],
            ["limit cuts / increases", f"{st['concurrency']['decreases']} / {st['concurrency']['increases']}", ""],
            ["429s (retried)", str(rate_limited), ""],
            ["dialogues kept / dropped", f"{r['kept']} / {r['dropped']}", ""]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
    print(f"limit_vs_capacity={mean_limit / args.capacity:.3f} goodput_ratio={goodput / ideal:.3f} "
          f"dropped={r['dropped']} rate_limited={rate_limited}")


if __name__ == "__main__":
    main()
