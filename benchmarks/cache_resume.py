"""Cache-resume benchmark: kill a generation run at half, resume it, and count what the resume paid.

toolturn-generate (roles=llm, domain=retail) runs against the scripted world server (tests/llm_world.py, in
this process, so that every request it answers is counted). First an uninterrupted run gives each
dialogue's LLM calls. Then the same run is SIGKILLed once half its dialogues are saved and resumed, once
with the response cache (the default) and once with `cache=false`. The bound on a resume is the calls of
the dialogues it still had to finish: the uninterrupted run's calls less those of the dialogues saved before
the kill (the same seed makes the same dialogue of each index, so dropped dialogues and those cancelled at
the end count as in the uninterrupted run); with the cache the resume also does not pay again for the calls that
the dialogues in flight at the kill had already made, so that killed + resumed calls = uninterrupted calls
("paid twice" = killed + resumed - uninterrupted). Two things keep it from exactly 0: the requests in flight
at the kill (the server answered them, the killed client never stored the answers: at most `--concurrency`),
and the dialogues started past the quota and cancelled at the end of a session (a few calls either way).

    python benchmarks/cache_resume.py [--dialogues 40] [--concurrency 8] [--latency 0.02]

Last line: resumed_calls=... bound=... paid_twice=... paid_twice_without_cache=...
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_world import World  # noqa: E402
from mock_openai import MockServer  # noqa: E402

BIN = Path(sys.executable).parent


def command(url: str, out: Path, n: int, concurrency: int, *extra: str) -> list[str]:
    return [str(BIN / "toolturn-generate"), "domain=retail", "roles=llm", "llm=external", "policy=report",
            f"llm.endpoints.default.base_url={url}", "llm.endpoints.default.model=mock", f"num_dialogues={n}",
            f"concurrency={concurrency}", "seed=3", f"out_dir={out}", "progress=false", "logger=none", *extra]


def committed(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / "shards").glob("part-*.jsonl")) if (out / "shards").exists() else 0


def calls_by_index(out: Path) -> dict[int, int]:
    rows = (json.loads(line) for p in sorted((out / "shards").glob("part-*.jsonl")) for line in p.read_text().splitlines())
    return {r["meta"]["index"]: r["meta"]["timing"]["llm_calls"] for r in rows}


def killed_and_resumed(server: MockServer, out: Path, args, whole: int, whole_calls: dict[int, int],
                       *extra: str) -> dict:
    start = len(server.requests)
    proc = subprocess.Popen(command(server.base_url, out, args.dialogues, args.concurrency, *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while committed(out) < args.dialogues // 2:
            if proc.poll() is not None:
                raise SystemExit(f"the run ended (rc {proc.returncode}) before half its dialogues were saved")
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = set(calls_by_index(out))
    killed_calls = len(server.requests) - start
    subprocess.run(command(server.base_url, out, args.dialogues, args.concurrency, *extra), check=True,
                   capture_output=True)
    resumed_calls = len(server.requests) - start - killed_calls
    bound = whole - sum(whole_calls[i] for i in before)
    return {"saved_at_kill": len(before), "killed_calls": killed_calls, "resumed_calls": resumed_calls, "bound": bound}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dialogues", type=int, default=40)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.02, help="mock seconds per answer (dialogues stay in flight)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MockServer(World(), args.latency) as server:
        subprocess.run(command(server.base_url, Path(tmp) / "whole", args.dialogues, args.concurrency), check=True,
                       capture_output=True)
        whole, whole_calls = len(server.requests), calls_by_index(Path(tmp) / "whole")
        cached = killed_and_resumed(server, Path(tmp) / "cached", args, whole, whole_calls)
        uncached = killed_and_resumed(server, Path(tmp) / "uncached", args, whole, whole_calls,
                                      "llm.endpoints.default.cache=false")
    print(f"cache-resume benchmark: {args.dialogues} dialogues, {args.concurrency} in flight, roles=llm on the "
          f"scripted world server ({args.latency:g} s per answer); uninterrupted run: {whole} LLM calls")
    headers = ["resume", "saved at kill", "calls before kill", "calls on resume", "bound (unfinished x calls)",
               "paid twice"]
    rows = []
    for name, r in (("with cache", cached), ("cache=false", uncached)):
        r["paid_twice"] = r["killed_calls"] + r["resumed_calls"] - whole
        rows.append([name, r["saved_at_kill"], r["killed_calls"], r["resumed_calls"], r["bound"], r["paid_twice"]])
    widths = [max(len(h), *(len(str(row[i])) for row in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    print(f"resumed_calls={cached['resumed_calls']} bound={cached['bound']} paid_twice={cached['paid_twice']} "
          f"paid_twice_without_cache={uncached['paid_twice']}")


if __name__ == "__main__":
    main()
