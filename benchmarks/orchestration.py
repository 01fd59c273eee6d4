"""Orchestration benchmark: the full user-oriented loop with LLM roles against a mock server.

The mock OpenAI-compatible server (tests/mock_openai.py --world, a separate process so that its CPU
is not charged to the harness) answers every role's request after a fixed latency L (200 ms). With C
dialogues in flight, each waiting on one LLM call at a time, the ideal rate is C / L calls per second.
We report the achieved rate in steady state (the middle 60% of the run, when all C slots are busy;
the whole-run average, ramp-up and tail included, is shown too), the harness's CPU milliseconds per
LLM call (the figure that says how many dialogues one core can drive), the mock's (on a machine with few cores the
two share them: their sum times the ideal rate is the CPU the level needs), and peak RSS.

Beside each level, the same client at the same concurrency with no dialogue around it (one-line chats): what this
machine's client, loopback TCP and mock allow, the ceiling for any harness here (`ceiling_ratio@C` against the
ideal C / L). The gap between that ceiling and the loop's ratio is the dialogue work (roles, prompts, SQL, judges).

    python benchmarks/orchestration.py [--quick] [--latency 0.2] [--levels 64 256 1024] [--cache] [--processes P]

With --processes P each level's dialogues are split over P processes, as `toolturn-generate workers=P processes=P`
runs them (each process the indices i % P == its own, with C / P in flight): one process drives its dialogues from
one core. The rate is then the sum over the processes in the common steady window, CPU ms per call their total CPU
over their total calls, and peak RSS the sum of their peaks.

Without --cache the loop runs without the response cache (the orchestration alone); --cache opens it in the run
dir as generation does by default (every answer written as an entry of `<out_dir>/llm_cache/`).

Last line: ratio@64=... ratio@256=... ratio@1024=... ceiling_ratio@64=... ... cpu_ms_per_call=... mock_cpu_ms_per_call=...
peak_rss_mib=... processes=...
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hydra import compose, initialize_config_module  # noqa: E402
from toolturn.core.endpoints import CACHE_DIR, Endpoints  # noqa: E402
from toolturn.core.rundir import RunDir
from toolturn.generate.dialogue import DialogueFactory  # noqa: E402
from toolturn.generate.domain_setup import setup_domain  # noqa: E402
from toolturn.generate.run import _produce  # noqa: E402
from toolturn.generate.shards import ShardWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_mock(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_openai.py"), "--world", "--port", "0",
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests")
    return proc, proc.stdout.readline().strip()


def config(url: str, concurrency: int, out_dir: Path):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("generate", overrides=[
            "pipeline=user_oriented", "domain=retail", "roles=llm", "llm=external", "policy=report",
            f"llm.endpoints.default.base_url={url}", "llm.endpoints.default.model=mock",
            f"llm.endpoints.default.max_concurrency={concurrency}", "llm.endpoints.default.timeout_s=60",
            f"concurrency={concurrency}", f"out_dir={out_dir}", "progress=false"])


async def run_worker(url: str, concurrency: int, dialogues: int, root: Path, cache: bool, worker: int = 0,
                     workers: int = 1, start=None) -> dict:
    """One process's share of a level: worker `worker` of `workers`, `concurrency` in flight. `start`: a barrier
    that every process of the level passes once its set-up is done, so that they run together."""
    cfg = config(url, concurrency, root)
    run = RunDir(root)
    with Endpoints(cfg.llm.endpoints, ["default"], run.logs, cache_dir=run.root / CACHE_DIR if cache else None) \
            as endpoints:
        domain = await setup_domain(cfg, run, endpoints)
        factory = DialogueFactory(domain, cfg, None, endpoints)
        client = endpoints.client("default")
        writer = ShardWriter(run, worker, 100_000)
        samples: list[tuple[float, int]] = []

        async def sampler() -> None:
            while True:
                samples.append((time.perf_counter(), client.calls))
                await asyncio.sleep(0.1)

        if start is not None:
            start.wait()
        sampling = asyncio.create_task(sampler())
        cpu0, t0 = time.process_time(), time.perf_counter()
        with tqdm(total=dialogues, disable=True) as bar:
            await _produce(factory, writer, iter(range(worker, 10 ** 12, workers)), dialogues, concurrency, bar,
                           max_drop_streak=10 ** 9)
        t1, cpu = time.perf_counter(), time.process_time() - cpu0
        samples.append((t1, client.calls))
        sampling.cancel()
        writer.close()
        calls = client.calls
        await endpoints.aclose()
    return {"calls": calls, "t0": t0, "t1": t1, "cpu_s": cpu, "samples": samples, "dialogues": writer.valid,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _worker_process(args: tuple, out) -> None:
    out.put(asyncio.run(run_worker(*args)))


def calls_at(samples: list[tuple[float, int]], t: float) -> float:
    """A process's call count at time t, interpolated between its samples (0 before its first)."""
    before = [(s, c) for s, c in samples if s <= t]
    after = [(s, c) for s, c in samples if s > t]
    if not before:
        return 0.0
    if not after:
        return float(before[-1][1])
    (s0, c0), (s1, c1) = before[-1], after[0]
    return c0 + (c1 - c0) * (t - s0) / (s1 - s0)


def run_level(url: str, concurrency: int, dialogues: int, work: Path, cache: bool, processes: int) -> dict:
    root = work / f"c{concurrency}"
    if processes == 1:
        parts = [asyncio.run(run_worker(url, concurrency, dialogues, root, cache))]
    else:
        # the domain is set up once here, as the first of a run's workers does; the others reuse it
        asyncio.run(_set_up(url, root))
        ctx = multiprocessing.get_context("fork")
        start, out = ctx.Barrier(processes), ctx.Queue()
        procs = [ctx.Process(target=_worker_process, args=((url, concurrency // processes, dialogues // processes,
                                                            root, cache, i, processes, start), out))
                 for i in range(processes)]
        for p in procs:
            p.start()
        parts = []
        while len(parts) < processes:
            try:
                parts.append(out.get(timeout=1.0))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):  # it died before it reported
                    for p in procs:
                        p.kill()
                    sys.exit(f"a benchmark process failed (exit codes {[p.exitcode for p in procs]})")
        for p in procs:
            p.join()
    t0, t1 = min(p["t0"] for p in parts), max(p["t1"] for p in parts)
    wall = t1 - t0
    lo, hi = t0 + 0.2 * wall, t0 + 0.8 * wall
    steady = sum(calls_at(p["samples"], hi) - calls_at(p["samples"], lo) for p in parts) / (hi - lo)
    calls = sum(p["calls"] for p in parts)
    return {"calls": calls, "wall": wall, "steady": steady, "average": calls / wall,
            "cpu_ms": 1000 * sum(p["cpu_s"] for p in parts) / max(1, calls),
            "dialogues": sum(p["dialogues"] for p in parts), "peak_mib": sum(p["peak_mib"] for p in parts)}


async def _set_up(url: str, root: Path) -> None:
    cfg = config(url, 1, root)
    run = RunDir(root)
    with Endpoints(cfg.llm.endpoints, ["default"], run.logs) as endpoints:
        await setup_domain(cfg, run, endpoints)
        await endpoints.aclose()


async def client_only(url: str, concurrency: int, calls_each: int, work: Path) -> dict:
    """The same endpoint and client with no dialogue around them: `concurrency` workers each sending `calls_each`
    one-line chats. Its rate is what this machine's client, loopback TCP and mock server allow at this concurrency:
    the ceiling a harness can reach here, whatever the ideal (C / latency) says."""
    cfg = config(url, concurrency, work / f"bare{concurrency}")
    with Endpoints(cfg.llm.endpoints, ["default"], work / f"bare{concurrency}") as endpoints:
        client = endpoints.client("default")
        messages = [{"role": "user", "content": "Say something short."}]

        async def worker() -> None:
            for _ in range(calls_each):
                await client.chat(messages)

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await endpoints.aclose()
    calls = concurrency * calls_each
    return {"rate": calls / wall, "cpu_ms": 1000 * cpu / calls}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--levels", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--rounds", type=float, default=None, help="dialogues per level = rounds x concurrency")
    p.add_argument("--cache", action="store_true", help="with the response cache, as generation runs by default")
    p.add_argument("--processes", type=int, default=1, help="split each level over this many processes")
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 4)
    proc, url = start_mock(args.latency)
    rows, results = [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for c in args.levels:
                mock0 = cpu_seconds(proc.pid)
                r = run_level(url, c, int(rounds * c), Path(tmp), args.cache, args.processes)
                r["mock_ms"] = 1000 * (cpu_seconds(proc.pid) - mock0) / max(1, r["calls"])
                bare = asyncio.run(client_only(url, c, 20, Path(tmp)))
                ideal = c / args.latency
                r["ceiling"] = bare["rate"]
                results[c] = r
                rows.append([c, r["dialogues"], r["calls"], f"{r['wall']:.1f}", f"{ideal:.0f}", f"{r['steady']:.0f}",
                             f"{r['steady'] / ideal:.3f}", f"{r['average'] / ideal:.3f}", f"{r['cpu_ms']:.3f}",
                             f"{r['mock_ms']:.3f}",
                             f"{bare['rate']:.0f}", f"{bare['cpu_ms']:.3f}", f"{r['steady'] / bare['rate']:.3f}",
                             f"{r['peak_mib']:.0f}"])
    finally:
        proc.terminate()
        proc.wait()
    peak_mib = max(r["peak_mib"] for r in results.values())
    headers = ["dialogues in flight", "kept", "LLM calls", "wall s", "ideal calls/s", "steady calls/s",
               "ratio", "ratio (whole run)", "CPU ms/call", "mock's CPU ms/call", "client-only calls/s", "its CPU ms/call",
               "ratio to client-only", "peak RSS MiB"]
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(f"orchestration benchmark: user-oriented loop, roles=llm, domain=retail, mock latency "
          f"{args.latency * 1000:.0f} ms, {rounds:g} x concurrency dialogues per level, response cache "
          f"{'on' if args.cache else 'off'}, {args.processes} process{'es' if args.processes > 1 else ''} per level "
          f"(client-only: one process)")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))
    print("peak RSS: the harness process's (with --processes, the sum of its processes' peaks)")
    calls = sum(r["calls"] for r in results.values())
    cpu = sum(r["cpu_ms"] * r["calls"] for r in results.values()) / calls
    mock = sum(r["mock_ms"] * r["calls"] for r in results.values()) / calls
    print(" ".join(f"ratio@{c}={results[c]['steady'] / (c / args.latency):.3f}" for c in args.levels)
          + " " + " ".join(f"ceiling_ratio@{c}={results[c]['ceiling'] / (c / args.latency):.3f}" for c in args.levels)
          + f" cpu_ms_per_call={cpu:.3f} mock_cpu_ms_per_call={mock:.3f} peak_rss_mib={peak_mib:.0f}"
          + f" processes={args.processes}")


if __name__ == "__main__":
    main()
