"""Evaluation throughput: the SQL-domain evaluation (eval=sql_tau, rule-based text user) per second
against the orchestration benchmark's mock server at concurrency 1, 8 and 32, and SmolLM2 episodes per
minute on this CPU: the set-up before issue 16 (a managed `transformers serve`, one episode at a time) beside the
chosen one (the managed batched server, core/serve_batched.py: continuous batching and a prefix cache, 8 episodes
in flight), on the same tasks and samples, in alternating rounds so that both share the machine's load.

    python benchmarks/eval_throughput.py [--latency 0.2] [--episodes 64] [--smol-tasks 4] [--smol-samples 4]
                                         [--batched-args '--threads 1'] [--replicas 2] [--skip-smol]

With --replicas N a third set-up runs in the same rounds: N copies of the batched server behind one endpoint
(`replicas: N`, each on its own share of the cores, so one thread each on this machine), 8 in flight in all.

Last line: episodes_per_s@1=... episodes_per_s@8=... episodes_per_s@32=... smol_episodes_per_min=...
smol_episodes_per_min_old=... smol_speedup=... [smol_episodes_per_min_replicas=... replicas_vs_one=...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def cfg(*overrides: str):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("evaluate", overrides=["progress=false", "logger=none", *overrides])


def mock_level(url: str, concurrency: int, episodes: int, work: Path) -> float:
    from toolturn.evaluate.run import evaluate

    c = cfg("endpoint=external", f"endpoint.base_url={url}", "endpoint.model=mock", "checkpoints=[base]", "n=1",
            f"num_tasks={episodes}", f"concurrency={concurrency}", "user.max_stall_turns=2",
            f"endpoint.max_concurrency={concurrency}", f"out_dir={work / f'c{concurrency}'}")
    t0 = time.perf_counter()
    evaluate(c)
    return episodes / (time.perf_counter() - t0)


# SmolLM2 on this CPU: the set-up before issue 16 (one `transformers serve`, one episode at a time) and the chosen
# one (the batched server, `concurrency` episodes in flight); both offer 4 tools per episode
SETUPS = {"transformers": ("transformers", 1), "batched": ("batched", 8)}
REPLICATED = "replicas"  # the third set-up's name (--replicas)


def setups(replicas: int) -> dict[str, tuple[str, int]]:
    """name -> (server kind, episodes in flight) of the set-ups a run compares."""
    return {**SETUPS, **({REPLICATED: ("batched", 8)} if replicas > 1 else {})}


async def smol(tasks: int, samples: int, work: Path, batched_args: list[str],
               replicas: int) -> tuple[dict[str, float], dict[str, dict]]:
    """Episodes per minute of each set-up on the same tasks × samples, run in alternating rounds of one batched
    round's size, so that both see the same load; and each set-up's mean prompt and cached tokens per request."""
    from toolturn.core.endpoints import Endpoints, parse_endpoint
    from toolturn.evaluate.assistants import ModelAssistant
    from toolturn.evaluate.checkpoints import request_sampling
    from toolturn.evaluate.sql_tau import SqlTauSuite

    compared = setups(replicas)
    specs = {name: parse_endpoint({"server": server, "model": "embedded:smollm2", "max_concurrency": c,
                                   "timeout_s": 1800, "max_retries": 1,
                                   **({"extra_args": batched_args} if name == "batched" else {}),
                                   **({"replicas": replicas} if name == REPLICATED else {})}, "endpoint")
             for name, (server, c) in compared.items()}
    sampling = {name: request_sampling(OmegaConf.create({"temperature": 1.0, "top_p": 1.0, "max_tokens": 64}), spec)
                for name, spec in specs.items()}
    suite = SqlTauSuite(cfg("eval.tools_per_episode=4", f"num_tasks={tasks}", "user.max_stall_turns=1"), work / "smol")
    # a task's samples next to each other, as an evaluation runs them
    episodes = [(suite.items[t], t * samples + k) for t in range(tasks) for k in range(samples)]
    spent = dict.fromkeys(specs, 0.0)
    usage = {name: {"requests": 0, "prompt": 0, "cached": 0} for name in specs}
    round_size = max(c for _, c in compared.values())
    with Endpoints(specs, list(specs), work / "logs") as endpoints:
        for start in range(0, len(episodes), round_size):
            for name, (_, concurrency) in compared.items():
                client, gate = endpoints.client(name), asyncio.Semaphore(concurrency)

                async def one(item, seed):
                    async with gate:
                        assistant = ModelAssistant(client, sampling[name], seed)
                        await suite.episode(item, assistant)
                        usage[name]["requests"] += assistant.requests
                        usage[name]["prompt"] += assistant.prompt_tokens

                t0 = time.perf_counter()
                await asyncio.gather(*(one(item, seed) for item, seed in episodes[start:start + round_size]))
                spent[name] += time.perf_counter() - t0
        for name in specs:
            if name != "transformers":  # what the batched servers' prefix caches supplied
                usage[name]["cached"] = sum(_engine_stats(url).get("prefix_reused_tokens", 0)
                                            for url in endpoints.live[name].endpoint.urls())
        await endpoints.aclose()
    per_min = {name: 60 * len(episodes) / t for name, t in spent.items()}
    return per_min, {name: {k: v / max(u["requests"], 1) for k, v in u.items() if k != "requests"}
                     for name, u in usage.items()}


def _engine_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.rstrip("/") + "/engine/stats", timeout=60) as response:
        return json.loads(response.read())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--episodes", type=int, default=64, help="episodes per concurrency level (mock)")
    p.add_argument("--smol-tasks", type=int, default=4, help="SmolLM2: tasks, each run --smol-samples times")
    p.add_argument("--smol-samples", type=int, default=4, help="samples per task (the evaluation's n)")
    p.add_argument("--batched-args", default="", help="extra arguments of the batched server, e.g. '--threads 1'")
    p.add_argument("--replicas", type=int, default=1,
                   help="> 1: also N copies of the batched server behind one endpoint, each on its own cores")
    p.add_argument("--skip-smol", action="store_true")
    args = p.parse_args()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_openai.py"), "--world", "--port", "0",
                             "--latency", str(args.latency)], stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests")
    url = proc.stdout.readline().strip()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for c in (1, 8, 32):
                rates[c] = mock_level(url, c, min(args.episodes, max(8, 4 * c)) if c == 1 else args.episodes,
                                      Path(tmp))
        finally:
            proc.terminate()
            proc.wait()
        per_min, tokens = dict.fromkeys(SETUPS, float("nan")), {}
        if not args.skip_smol:
            per_min, tokens = asyncio.run(smol(args.smol_tasks, args.smol_samples, Path(tmp),
                                               args.batched_args.split(), args.replicas))
    print(f"eval throughput: sql_tau, rule text user, mock latency {args.latency * 1000:.0f} ms")
    print("| concurrency | episodes/s |\n|---|---|")
    for c, r in rates.items():
        print(f"| {c} | {r:.2f} |")
    if tokens:
        n = args.smol_tasks * args.smol_samples
        print(f"SmolLM2-135M on CPU, sql_tau retail, 4 tools per episode, max_tokens 64, {args.smol_tasks} tasks x "
              f"{args.smol_samples} samples = {n} episodes per set-up, in alternating rounds "
              f"(batched server arguments: {args.batched_args or 'its defaults'}):")
        print("| set-up | in flight | episodes/min | prompt tokens/request | from the prefix cache |")
        print("|---|---|---|---|---|")
        for name in tokens:
            label = f"batched x {args.replicas} replicas" if name == REPLICATED else name
            cached = f"{tokens[name]['cached']:.0f}" if name != "transformers" else "-"
            print(f"| {label} | {setups(args.replicas)[name][1]} | {per_min[name]:.2f} | "
                  f"{tokens[name]['prompt']:.0f} | {cached} |")
    speedup = per_min["batched"] / per_min["transformers"]
    replicated = (f" smol_episodes_per_min_replicas={per_min[REPLICATED]:.2f} "
                  f"replicas_vs_one={per_min[REPLICATED] / per_min['batched']:.2f}" if REPLICATED in per_min else "")
    print(f"episodes_per_s@1={rates[1]:.2f} episodes_per_s@8={rates[8]:.2f} episodes_per_s@32={rates[32]:.2f} "
          f"smol_episodes_per_min={per_min['batched']:.2f} smol_episodes_per_min_old={per_min['transformers']:.2f} "
          f"smol_speedup={speedup:.2f}{replicated}")


if __name__ == "__main__":
    main()
