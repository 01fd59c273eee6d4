"""Evaluation throughput: the SQL-domain evaluation (eval=sql_tau, rule-based text user) per second
against the orchestration benchmark's mock server at concurrency 1, 8 and 32, and SmolLM2 episodes per
minute on this CPU with the chosen set-up (tools_per_episode=4: the plan's tools plus distractors, a
much shorter prompt) against the plain one (the 12 tools of the training data), on one managed
`transformers serve`, the two interleaved so that they share the machine's load.

    python benchmarks/eval_throughput.py [--latency 0.2] [--episodes 64] [--smol-episodes 2] [--skip-smol]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
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


async def smol(episodes: int, work: Path) -> tuple[float, float, dict]:
    from toolturn.core.endpoints import Endpoints, parse_endpoint
    from toolturn.evaluate.assistants import ModelAssistant
    from toolturn.evaluate.checkpoints import request_sampling
    from toolturn.evaluate.sql_tau import SqlTauSuite

    spec = parse_endpoint({"server": "transformers", "model": "embedded:smollm2", "max_concurrency": 1,
                           "timeout_s": 900, "max_retries": 1}, "endpoint")
    sampling = request_sampling(OmegaConf.create({"temperature": 1.0, "top_p": 1.0, "max_tokens": 64}), spec)
    suites = {name: SqlTauSuite(cfg(f"eval.tools_per_episode={tools}", f"num_tasks={episodes}",
                                    "user.max_stall_turns=1"), work / name)
              for name, tools in (("chosen", 4), ("plain", 12))}
    spent, tokens = {"chosen": 0.0, "plain": 0.0}, {"chosen": 0, "plain": 0}
    with Endpoints({"m": spec}, ["m"], work / "logs") as endpoints:
        client = endpoints.client("m")
        for i in range(episodes):
            for name, suite in suites.items():
                assistant = ModelAssistant(client, sampling, i)
                t0 = time.perf_counter()
                await suite.episode(suite.items[i], assistant)
                spent[name] += time.perf_counter() - t0
                tokens[name] += assistant.prompt_tokens // max(assistant.requests, 1)
        await endpoints.aclose()
    return (60 * episodes / spent["chosen"], 60 * episodes / spent["plain"],
            {k: v // episodes for k, v in tokens.items()})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--episodes", type=int, default=64, help="episodes per concurrency level (mock)")
    p.add_argument("--smol-episodes", type=int, default=2)
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
        chosen = plain = float("nan")
        prompt = {}
        if not args.skip_smol:
            chosen, plain, prompt = asyncio.run(smol(args.smol_episodes, Path(tmp)))
    print(f"eval throughput: sql_tau, rule text user, mock latency {args.latency * 1000:.0f} ms")
    print("| concurrency | episodes/s |\n|---|---|")
    for c, r in rates.items():
        print(f"| {c} | {r:.2f} |")
    if prompt:
        print(f"SmolLM2 (transformers serve, max_tokens 64, {args.smol_episodes} episodes each, interleaved): "
              f"chosen tools_per_episode=4 {chosen:.2f} episodes/min (prompt ~{prompt['chosen']} tokens/request), "
              f"plain 12 tools {plain:.2f} episodes/min (~{prompt['plain']} tokens/request), ratio {chosen / plain:.2f}")
    print(f"episodes_per_s@1={rates[1]:.2f} episodes_per_s@8={rates[8]:.2f} episodes_per_s@32={rates[32]:.2f} "
          f"smol_episodes_per_min={chosen:.2f} smol_episodes_per_min_plain={plain:.2f}")


if __name__ == "__main__":
    main()
