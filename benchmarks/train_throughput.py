"""Training throughput on this machine: tokens/s and padding fraction of plain padding, padding-free batching and
BFD packing, for tiny_qwen3 and smollm2_135m (LoRA, the recipe's own trainer and data path), in one run.

    .venv/bin/python benchmarks/train_throughput.py [--data RUN_DIR] [--steps-tiny 6] [--steps-smollm2 2]

Without --data it generates 16 user-oriented retail dialogues (rule roles) into a temp dir. tokens/s counts real
(non-pad) tokens over the wall time of the optimizer steps (forward, backward, update); the padding fraction is
padded positions over all positions fed to the model; each setting runs in a fresh process, so its peak RSS is its
own (beside the recipe's pre-flight estimate). Prints a table; the last line holds the smollm2_135m figures for plain
padding and for the better padding-free setting:
    tokens_per_s=... padding_fraction=... peak_rss_mb=... packed_tokens_per_s=... packed_padding_fraction=...
    packed_peak_rss_mb=...
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hydra import compose, initialize_config_module

BATCHINGS = ("padding", "padding_free", "packing")


def generate(out: Path) -> Path:
    exe = Path(sys.executable).parent / "toolturn-generate"
    cmd = [str(exe) if exe.exists() else shutil.which("toolturn-generate"), "pipeline=user_oriented", "domain=retail",
           "roles=rule", "num_dialogues=16", "seed=0", "tools_per_dialogue=4", "progress=false", f"out_dir={out}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def measure(model: str, batching: str, data: Path, steps: int, batch_size: int, max_length: int, work: Path) -> dict:
    """One setting in a fresh process, so that the peak RSS it reports is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure, model, batching, data, steps, batch_size, max_length, work).result()


def _measure(model: str, batching: str, data: Path, steps: int, batch_size: int, max_length: int, work: Path) -> dict:
    from toolturn.train.memory import peak_rss_mb
    from toolturn.train.recipe import TrainRecipe

    for name in ("transformers", "trl", "peft", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)

    with initialize_config_module("toolturn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"model={model}", "train=lora", f"train.batching={batching}", f"train.batch_size={batch_size}",
            f"data.paths=[{data}]", f"data.max_length={max_length}", "data.overlong=truncate", "data.val_fraction=0",
            f"max_steps={steps}", "eval_steps=1000000", "logger=none", "progress=lines",
            f"out_dir={work / f'{model}-{batching}'}"])
    recipe = TrainRecipe(cfg)
    recipe.setup()
    recipe.train()
    logs = [h for h in recipe.trainer.state.log_history if "tokens" in h]
    tokens = sum(h["tokens"] for h in logs)
    seconds = sum(h["step_time_s"] for h in logs)
    positions = sum(h["tokens"] / (1 - h["padding_fraction"]) for h in logs)
    recipe.cleanup()
    return {"model": model, "batching": batching, "steps": len(logs), "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "padding_fraction": 1 - tokens / positions,
            "rows": recipe.trainer.train_dataset.num_rows, "peak_rss_mb": peak_rss_mb(),
            "estimate_mb": recipe.memory_estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="a run dir or HF dataset dir (default: generate one)")
    parser.add_argument("--steps-tiny", type=int, default=6)
    parser.add_argument("--steps-smollm2", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="toolturn-train-bench-") as tmp:
        work = Path(tmp)
        data = args.data or generate(work / "data")
        plan = [("tiny_qwen3", args.steps_tiny, 4, 2048), ("smollm2_135m", args.steps_smollm2, 2, 1536)]
        results = [measure(model, b, data, steps, bs, ml, work) for model, steps, bs, ml in plan for b in BATCHINGS]
    print()
    print(f"{'model':<14} {'batching':<13} {'steps':>5} {'rows':>5} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} "
          f"{'padding':>8} {'peak MB':>8} {'est. MB':>8}")
    for r in results:
        print(f"{r['model']:<14} {r['batching']:<13} {r['steps']:>5} {r['rows']:>5} {r['tokens']:>8} "
              f"{r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} {100 * r['padding_fraction']:>7.1f}% "
              f"{r['peak_rss_mb']:>8.0f} {'-' if r['estimate_mb'] is None else round(r['estimate_mb']):>8}")
    smol = {r["batching"]: r for r in results if r["model"] == "smollm2_135m"}
    best = max((smol["padding_free"], smol["packing"]), key=lambda r: r["tokens_per_s"])
    print(f"(smollm2_135m: the better padding-free setting is {best['batching']})")
    print(f"tokens_per_s={smol['padding']['tokens_per_s']:.1f} padding_fraction={smol['padding']['padding_fraction']:.4f} "
          f"peak_rss_mb={smol['padding']['peak_rss_mb']:.0f} packed_tokens_per_s={best['tokens_per_s']:.1f} "
          f"packed_padding_fraction={best['padding_fraction']:.4f} packed_peak_rss_mb={best['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
