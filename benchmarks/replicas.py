"""Replicas benchmark: one endpoint over 4 mock replicas of different latencies, one of which dies mid-run.

Each replica is tests/mock_openai.py in its own process (its CPU is not the client's), answering after its
own latency; the client caps each replica at `--per-replica` requests in flight, so replica i can answer
per_replica / latency_i requests a second and the endpoint the sum over the live ones. Workers (as many as
the caps allow in all) send requests back to back through one LLMClient. Halfway through, the fastest
replica is killed (SIGKILL: its in-flight requests see their connections reset). We report, for the window
before the kill and the window after it (a second after each edge left out), the rate achieved against the
sum of the live replicas' capacities, and every request's fate: a request that failed for good is lost.

    python benchmarks/replicas.py [--seconds 24] [--per-replica 16] [--latencies 0.4 0.8 1.2 1.6]

Last line: ratio_all_live=... ratio_after_death=... lost=... ejections=...
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from toolturn.core.llm import Endpoint, LLMClient, LLMError  # noqa: E402

MSGS = [{"role": "user", "content": "hello"}]


def start_replica(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_openai.py"), "--port", "0",
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests")
    return proc, proc.stdout.readline().strip()


async def drive(urls: list[str], per_replica: int, seconds: float, victim: subprocess.Popen) -> dict:
    total = per_replica * len(urls)
    endpoint = Endpoint(urls[0], "mock", replicas=tuple(urls), max_concurrency=total,
                        replica_max_concurrency=per_replica, timeout_s=30, max_retries=4, probe_s=0.5)
    done: list[float] = []
    lost: list[str] = []
    async with LLMClient(endpoint) as client:
        t0 = time.perf_counter()
        stop, kill_at = t0 + seconds, t0 + seconds / 2

        async def worker() -> None:
            while time.perf_counter() < stop:
                try:
                    await client.chat(MSGS)
                    done.append(time.perf_counter() - t0)
                except LLMError as exc:
                    lost.append(exc.reason)

        async def killer() -> None:
            await asyncio.sleep(kill_at - time.perf_counter())
            victim.send_signal(signal.SIGKILL)

        kill = asyncio.create_task(killer())
        await asyncio.gather(*(worker() for _ in range(total)))
        await kill
        stats = client.stats()
    return {"done": sorted(done), "lost": lost, "stats": stats, "calls": stats["calls"]}


def rate(done: list[float], lo: float, hi: float) -> float:
    return (bisect.bisect_left(done, hi) - bisect.bisect_left(done, lo)) / (hi - lo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=24.0)
    p.add_argument("--per-replica", type=int, default=16)
    p.add_argument("--latencies", type=float, nargs=4, default=[0.4, 0.8, 1.2, 1.6])
    args = p.parse_args()
    replicas = [start_replica(lat) for lat in args.latencies]
    try:
        urls = [url for _, url in replicas]
        victim = min(range(4), key=lambda i: args.latencies[i])
        r = asyncio.run(drive(urls, args.per_replica, args.seconds, replicas[victim][0]))
    finally:
        for proc, _ in replicas:
            proc.kill()
            proc.wait()
    capacity = [args.per_replica / lat for lat in args.latencies]
    half = args.seconds / 2
    windows = [("all 4 live", 1.0, half - 0.5, sum(capacity)),
               ("after the kill", half + 1.0, args.seconds - 0.5, sum(c for i, c in enumerate(capacity) if i != victim))]
    print(f"replicas benchmark: latencies {args.latencies} s, {args.per_replica} in flight per replica, "
          f"{args.seconds:g} s, replica {victim} ({args.latencies[victim]:g} s) killed at {half:g} s")
    headers = ["window", "capacity req/s", "achieved req/s", "ratio"]
    rows = []
    ratios = []
    for name, lo, hi, cap in windows:
        achieved = rate(r["done"], lo, hi)
        ratios.append(achieved / cap)
        rows.append([f"{name} [{lo:g}, {hi:g}) s", f"{cap:.0f}", f"{achieved:.0f}", f"{achieved / cap:.3f}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
    print("per replica:")
    for i, (url, st) in enumerate(r["stats"]["replicas"].items()):
        print(f"  {url} latency {args.latencies[i]:g} s: {st['requests']} requests, {st['answered']} answered, "
              f"{st['failures']} failed attempts, ejected {st['ejections']}x, mean latency {st['mean_latency_s']} s")
    ejections = sum(st["ejections"] for st in r["stats"]["replicas"].values())
    print(f"requests: {r['calls']} sent, {len(r['done'])} answered, {len(r['lost'])} lost "
          f"({', '.join(sorted(set(r['lost']))) or 'none'}), {r['stats']['retries']} retried attempts")
    print(f"ratio_all_live={ratios[0]:.3f} ratio_after_death={ratios[1]:.3f} lost={len(r['lost'])} "
          f"ejections={ejections}")


if __name__ == "__main__":
    main()
