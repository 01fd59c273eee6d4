"""Training throughput on this machine: tokens/s and padding fraction of plain padding, padding-free batching and
BFD packing, for tiny_qwen3 and smollm2_135m (LoRA, the recipe's own trainer and data path), and a bare TRL
`SFTTrainer` + peft LoRA run beside the recipe's smollm2_135m plain padding, in one run.

    .venv/bin/python benchmarks/train_throughput.py [--data RUN_DIR] [--steps-tiny 6] [--steps-smollm2 2] [--rounds 2]
                                                    [--side-by-side]

Without --data it generates 16 user-oriented retail dialogues (rule roles) into a temp dir. tokens/s counts real
(non-pad) tokens over the wall time of the optimizer steps (forward, backward, update); the padding fraction is
padded positions over all positions fed to the model; each setting runs in a fresh process, so its peak RSS is its
own (beside the recipe's pre-flight estimate).

The bare TRL run (`trl` in the table) is what a user would write without this harness: the model loaded with
`AutoModelForCausalLM.from_pretrained` from the same embedded SmolLM2 dir, a plain `SFTConfig` (TRL's defaults:
its default plain-padding collator, gradient checkpointing on, non-reentrant) with only what must match set to the
recipe's values (batch size, max length, steps, learning rate, optimizer, seed and data seed, so it trains on the
same batches; float32 as the recipe's smollm2_135m, where TRL would default to bf16 autocast), and the recipe's
LoRA (rank, alpha, dropout, target modules) passed as `peft_config`. It trains on the same tokenized rows (the
recipe's data path: our chat template, its assistant-only mask and per-turn weights, overlong rows truncated),
whose `assistant_masks` TRL turns into labels itself. Its tokens are `include_num_input_tokens_seen="non_padding"`
and its time a `TrainerCallback` from on_step_begin to on_step_end, the same window the recipe's StepTimer measures.
The recipe's plain padding and the TRL run alternate `--rounds` times (harness first in odd rounds, TRL first in even
ones); other load on a shared machine only ever slows a run down, so each side's fastest round is compared. On a
machine that other work keeps busy, `--side-by-side` runs each round's two at once instead, each in its own process
pinned to its own core with one torch thread (they swap cores every round), so both see the same moment's load.

Prints a table; the last line holds the smollm2_135m figures for plain padding, for the better padding-free
setting, and the harness's plain-padding tokens/s over bare TRL's:
    tokens_per_s=... padding_fraction=... peak_rss_mb=... packed_tokens_per_s=... packed_padding_fraction=...
    packed_peak_rss_mb=... trl_tokens_per_s=... harness_vs_trl=...
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
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
    """One setting in a fresh process, so that the peak RSS it reports is its own (batching `trl`: bare TRL)."""
    with _pool() as pool:
        return _submit(pool, model, batching, data, steps, batch_size, max_length, work).result()


def measure_side_by_side(settings: list[tuple], cores: list[int]) -> list[dict]:
    """Settings at the same time, each in a fresh process pinned to its own core with one torch thread: whatever
    else the machine does at that moment, it does to all of them."""
    pools = [_pool(core) for core in cores]
    try:
        futures = [_submit(pool, *setting) for pool, setting in zip(pools, settings)]
        return [f.result() for f in futures]
    finally:
        for pool in pools:
            pool.shutdown()


def _pool(core: int | None = None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=None if core is None else _pin, initargs=() if core is None else (core,))


def _pin(core: int) -> None:
    import os

    os.sched_setaffinity(0, {core})
    os.environ["OMP_NUM_THREADS"] = "1"  # read when torch is imported, which the measurement does later


def _submit(pool: ProcessPoolExecutor, model: str, batching: str, *rest):
    return pool.submit(_measure_trl if batching == "trl" else _measure, model, batching, *rest)


def _config(model: str, batching: str, data: Path, steps: int, batch_size: int, max_length: int, work: Path):
    for name in ("transformers", "trl", "peft", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("train", overrides=[
            f"model={model}", "train=lora", f"train.batching={batching}", f"train.batch_size={batch_size}",
            f"data.paths=[{data}]", f"data.max_length={max_length}", "data.overlong=truncate", "data.val_fraction=0",
            f"max_steps={steps}", "eval_steps=1000000", "logger=none", "progress=lines",
            f"out_dir={work / f'{model}-{batching}'}"])


def _result(model: str, batching: str, steps: int, tokens: int, seconds: float, positions: float | None, rows: int,
            estimate_mb: float | None) -> dict:
    from toolturn.train.memory import peak_rss_mb

    return {"model": model, "batching": batching, "steps": steps, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "padding_fraction": None if positions is None else 1 - tokens / positions,
            "rows": rows, "peak_rss_mb": peak_rss_mb(), "estimate_mb": estimate_mb}


def _measure(model: str, batching: str, data: Path, steps: int, batch_size: int, max_length: int, work: Path) -> dict:
    from toolturn.train.recipe import TrainRecipe

    recipe = TrainRecipe(_config(model, batching, data, steps, batch_size, max_length, work))
    recipe.setup()
    recipe.train()
    logs = [h for h in recipe.trainer.state.log_history if "tokens" in h]
    positions = sum(h["tokens"] / (1 - h["padding_fraction"]) for h in logs)
    recipe.cleanup()
    return _result(model, batching, len(logs), sum(h["tokens"] for h in logs), sum(h["step_time_s"] for h in logs),
                   positions, recipe.trainer.train_dataset.num_rows, recipe.memory_estimate)


def _measure_trl(model: str, batching: str, data: Path, steps: int, batch_size: int, max_length: int,
                 work: Path) -> dict:
    """A bare TRL SFTTrainer + peft LoRA run on the recipe's tokenized rows (see the module docstring)."""
    import time

    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from toolturn.core.servers import embedded_smollm2_dir
    from toolturn.train.data import DataOptions, prepare, to_hf
    from toolturn.train.models import ModelSpec, tokenizer_for
    from toolturn.train.recipe import MethodSpec, lora_config

    cfg = _config(model, "padding", data, steps, batch_size, max_length, work)
    spec, method = ModelSpec.from_cfg(cfg.model), MethodSpec.from_cfg(cfg.train)
    if spec.source != "embedded_smollm2":
        raise SystemExit(f"the bare TRL run loads the embedded SmolLM2, not {model}")
    tokenizer = tokenizer_for(spec)
    rows = to_hf(prepare(DataOptions.from_cfg(cfg.data, cfg.seed, spec.thinking), tokenizer).train)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.steps, self.tokens, self.seconds = 0, 0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started, self.seen = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.started
            self.tokens += state.num_input_tokens_seen - self.seen
            self.steps += 1

    clock = StepClock()
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(embedded_smollm2_dir()), dtype=getattr(torch, spec.dtype)),
        args=SFTConfig(output_dir=str(work / f"{model}-trl"), max_steps=steps, per_device_train_batch_size=batch_size,
                       max_length=max_length, learning_rate=method.learning_rate, optim=method.optimizer,
                       seed=int(cfg.seed), data_seed=int(cfg.seed), bf16=spec.dtype == "bfloat16",
                       use_cpu=not torch.cuda.is_available(), include_num_input_tokens_seen="non_padding",
                       save_strategy="no", report_to="none", disable_tqdm=True),
        train_dataset=rows, processing_class=tokenizer, peft_config=lora_config(method.lora), callbacks=[clock])
    trainer.train()
    return _result(model, batching, clock.steps, clock.tokens, clock.seconds, None, trainer.train_dataset.num_rows,
                   None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="a run dir or HF dataset dir (default: generate one)")
    parser.add_argument("--steps-tiny", type=int, default=6)
    parser.add_argument("--steps-smollm2", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of smollm2_135m plain padding and TRL")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run each round's plain padding and TRL at once, each pinned to its own core with one "
                             "thread (they swap cores every round): on a machine other work keeps busy")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cores = sorted(os.sched_getaffinity(0))[:2]
    if args.side_by_side and len(cores) < 2:
        parser.error("--side-by-side needs two cores")
    tiny, smol = ("tiny_qwen3", args.steps_tiny, 4, 2048), ("smollm2_135m", args.steps_smollm2, 2, 1536)
    with tempfile.TemporaryDirectory(prefix="toolturn-train-bench-") as tmp:
        work = Path(tmp)
        data = args.data or generate(work / "data")

        def setting(model_steps_batch_length: tuple, batching: str, where: Path) -> tuple:  # measure()'s arguments
            model, steps, batch_size, max_length = model_steps_batch_length
            return model, batching, data, steps, batch_size, max_length, where

        results = [measure(*setting(s, b, work)) for s in (tiny, smol) for b in BATCHINGS
                   if not (s is smol and b == "padding")]
        for round_ in range(args.rounds):  # each round in its own dir: a second run in the first's would resume it
            pair = [setting(smol, b, work / f"round{round_}") for b in ("padding", "trl")]
            if args.side_by_side:
                results += measure_side_by_side(pair, cores if round_ % 2 == 0 else cores[::-1])
            else:
                results += [measure(*s) for s in (pair if round_ % 2 == 0 else pair[::-1])]
    print()
    print(f"{'model':<14} {'batching':<13} {'steps':>5} {'rows':>5} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} "
          f"{'padding':>8} {'peak MB':>8} {'est. MB':>8}")
    for r in results:
        padding = "-" if r["padding_fraction"] is None else f"{100 * r['padding_fraction']:.1f}%"
        print(f"{r['model']:<14} {r['batching']:<13} {r['steps']:>5} {r['rows']:>5} {r['tokens']:>8} "
              f"{r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} {padding:>8} "
              f"{r['peak_rss_mb']:>8.0f} {'-' if r['estimate_mb'] is None else round(r['estimate_mb']):>8}")
    smol_runs = sorted((r for r in results if r["model"] == "smollm2_135m"), key=lambda r: r["tokens_per_s"])
    fastest = {r["batching"]: r for r in smol_runs}  # the fastest run of each setting is the last one kept
    harness, trl = fastest["padding"], fastest["trl"]
    best = max((fastest["padding_free"], fastest["packing"]), key=lambda r: r["tokens_per_s"])
    how = ", run at once on a core and a thread each" if args.side_by_side else ""
    print(f"(smollm2_135m: the better padding-free setting is {best['batching']}; plain padding and trl are the "
          f"fastest of {args.rounds} round(s) each{how}, trl on the same batches: {trl['tokens']} tokens against "
          f"{harness['tokens']})")
    print(f"tokens_per_s={harness['tokens_per_s']:.1f} padding_fraction={harness['padding_fraction']:.4f} "
          f"peak_rss_mb={harness['peak_rss_mb']:.0f} packed_tokens_per_s={best['tokens_per_s']:.1f} "
          f"packed_padding_fraction={best['padding_fraction']:.4f} packed_peak_rss_mb={best['peak_rss_mb']:.0f} "
          f"trl_tokens_per_s={trl['tokens_per_s']:.1f} "
          f"harness_vs_trl={harness['tokens_per_s'] / trl['tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
