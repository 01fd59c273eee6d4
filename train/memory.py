"""Memory of a CPU training run: the measured peak, the memory available, and a pre-flight estimate of the peak.

The peak RSS is recorded in metrics.json (`peak_rss_mb`, `peak_rss_children_mb`). Before the model is loaded,
`check_fits` compares the estimate of the run's worst step with the memory available (MemAvailable, or less under a
cgroup limit), so that a run that cannot fit says so at once, naming the knobs to lower, instead of being killed by
the kernel minutes later.

The estimate, for P parameters of which T are trained, b bytes per value, a micro-batch of N token positions (rows
padded to the longest, or flattened), hidden size h, L layers and a vocabulary of V ids:

    700 MB                                     interpreter, libraries, tokenizer, data
    + (P + 3 T) b                              weights; gradients and two Adam moments of the trained ones
    + 8.5 x min(N, 4096) x min(V, 32768) x 4   TRL's fused LM head: fp32 logit tiles (SmolLM2: 4.3 GB from N = 4096)
    + N h b (L + 60)                           activations with gradient checkpointing (reentrant), N h b 48 L without
    + 1.3 x M x A^2 x 4 x (2, or L)            fp32 attention masks: M masked rows (padded rows, or one flattened
                                               row) spanning A tokens, in 2 layers at once with checkpointing

fitted to peaks measured on the 2-core 24 GB machine (SmolLM2-135M LoRA and full, tiny Qwen3; 1-2 rows of 512-6144
tokens, with and without checkpointing); tests/test_train_memory.py keeps those measurements. On a GPU the
activations live in device memory and no estimate is made.
"""

from __future__ import annotations

import ctypes
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from toolturn.core.errors import ToolturnError

MB = 1 << 20


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set in MB of this process, or (RUSAGE_CHILDREN) of its largest finished child. The two are not
    summed: a child forked from a large process (W&B's service is started so) counts the pages it shares with it."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # KiB on Linux


M_ARENA_MAX = -8  # mallopt's parameter number (glibc malloc.h)


def cap_malloc_arenas(n: int | None = None) -> bool:
    """Cap glibc's malloc arenas at `n` (default: the cores this process may use). glibc adds an arena whenever a
    thread finds the others locked, which a busy CPU makes common (a thread holding one is preempted), and each
    arena keeps what it freed: a tiny Qwen3 LoRA run peaked at 998 MB with every core busy against 810 MB idle,
    and 822 MB busy with the cap, the idle figure the estimate is fitted to. False where there is no glibc."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, n or len(os.sched_getaffinity(0))))
    except (OSError, AttributeError):
        return False


def _meminfo_available(meminfo: Path) -> float | None:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / MB
    return None


def _cgroup_room(cgroup: Path) -> float | None:
    """What the cgroup limit leaves (v2 memory.max, v1 memory.limit_in_bytes), None when there is no limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = cgroup / limit_file, cgroup / usage_file
        if not (limit.exists() and usage.exists()):
            continue
        text = limit.read_text().strip()
        if text == "max" or int(text) >= 1 << 60:  # v1 writes "no limit" as a huge page-aligned number
            return None
        return (int(text) - int(usage.read_text().strip())) / MB
    return None


def available_mb(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Memory this process can still take: MemAvailable, or less where a cgroup limit says so; None if unknown."""
    found = [mb for mb in (_meminfo_available(meminfo) if meminfo.exists() else None, _cgroup_room(cgroup))
             if mb is not None]
    return min(found) if found else None


# --------------------------------------------------------------------------------------------------
# The pre-flight estimate

TOKEN_TILE, VOCAB_TILE = 4096, 32768  # TRL's fused LM head scores [4096 tokens x 32768 ids] fp32 tiles at a time
# Fitted to the measured peaks (module docstring): estimate / measured is 1.06-1.12 for SmolLM2 LoRA with gradient
# checkpointing, at most 1.95 (tiny Qwen3, and a full run's first step, which has no Adam moments yet).
BASE_MB = 700  # interpreter, torch, transformers, W&B, tokenizer, data
HEAD_COPIES = 8.5  # logit tiles live at once in the fused head's forward and backward (CPU, torch ops)
RECOMPUTE = 60  # hidden-sized values per token for the one layer recomputed under checkpointing (LoRA dropout incl.)
STORED = 48  # hidden-sized values per token and layer kept for the backward pass without checkpointing
MASK_COPIES = 1.3  # fp32 [A, A] attention masks per masked row and live layer
MASKED_LAYERS_GC = 2  # layers whose mask is live at once under checkpointing
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class StepShape:
    """What the peak memory of one training step depends on."""

    parameters: int  # every weight of the model
    trainable: int  # the weights the optimizer updates (LoRA: the adapter's)
    hidden: int
    layers: int
    vocab: int
    dtype: str
    rows: int  # rows in the largest micro-batch
    longest: int  # tokens of the longest row
    positions: int  # token positions fed to the model in one micro-batch, padding included
    attended: int  # the longest span one attention covers: the longest row, or a flattened (padding-free) batch
    masked_rows: int  # rows attending through an [attended, attended] mask (padded rows, or one flattened row)
    gradient_checkpointing: bool


def step_shape(config, parameters: tuple[int, int], dtype: str, batching: str, batch_size: int, lengths: list[int],
               max_length: int, gradient_checkpointing: bool) -> StepShape:
    """The worst micro-batch of a run: its longest rows together (padded to the longest, flattened, or packed)."""
    text = config.get_text_config()
    longest = sorted(lengths, reverse=True)[:batch_size]
    rows = len(longest)
    if batching == "padding":  # one row alone needs no mask (sdpa runs it causal)
        positions, attended, masked = rows * longest[0], longest[0], rows if rows > 1 else 0
    elif batching == "padding_free":
        positions = attended = sum(longest)
        masked = 1 if rows > 1 else 0
    else:  # packing: batch_size rows of max_length tokens, flattened
        positions = attended = batch_size * max_length
        rows, masked = batch_size, 1
    return StepShape(parameters=parameters[0], trainable=parameters[1], hidden=text.hidden_size,
                     layers=text.num_hidden_layers, vocab=text.vocab_size, dtype=dtype,
                     rows=rows, longest=longest[0], positions=positions, attended=attended, masked_rows=masked,
                     gradient_checkpointing=gradient_checkpointing)


def count_parameters(config, lora_config=None) -> tuple[int, int]:
    """(all, trainable) parameters of the model a transformers config describes: built on the meta device, so
    nothing is allocated, with the LoRA adapter when `lora_config` is given."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        if lora_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora_config)
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def estimate_peak_mb(s: StepShape) -> float:
    """Peak RSS of a CPU training step, calibrated on measured peaks (see the module docstring)."""
    size = DTYPE_BYTES[s.dtype]
    weights = (s.parameters + 3 * s.trainable) * size  # + the gradients and two Adam moments of the trained ones
    head = HEAD_COPIES * min(s.positions, TOKEN_TILE) * min(s.vocab, VOCAB_TILE) * 4
    per_layer = s.positions * s.hidden * size
    if s.gradient_checkpointing:  # every layer's input is kept; one layer at a time is recomputed in full
        activations = per_layer * (s.layers + RECOMPUTE)
    else:
        activations = per_layer * s.layers * STORED
    live_layers = MASKED_LAYERS_GC if s.gradient_checkpointing else s.layers
    attention = MASK_COPIES * s.masked_rows * s.attended ** 2 * 4 * live_layers
    return BASE_MB + (weights + head + activations + attention) / MB


def check_fits(shape: StepShape, estimate_mb: float, available: float | None, max_length: int) -> None:
    """A one-line error naming the estimate, what is available and the knobs to lower, when the run cannot fit."""
    if available is None or estimate_mb <= available:
        return
    lower = []
    if shape.rows > 1:
        lower.append(f"train.batch_size ({shape.rows}; a larger train.grad_accum keeps the batch)")
    lower.append(f"data.max_length ({max_length}; the longest row has {shape.longest} tokens)")
    instead = [] if shape.gradient_checkpointing else ["set train.gradient_checkpointing=true"]
    if shape.trainable == shape.parameters:
        instead.append("use train=lora")
    raise ToolturnError(
        f"this run needs about {estimate_mb / 1024:.1f} GB of memory at its peak (estimated from "
        f"{shape.parameters / 1e6:,.0f}M parameters, {shape.rows} x {shape.longest} tokens per step, a "
        f"{shape.vocab:,}-token vocabulary, {shape.dtype}, gradient checkpointing "
        f"{'on' if shape.gradient_checkpointing else 'off'}) but {available / 1024:.1f} GB is available; lower "
        f"{' or '.join(lower)}" + (f", or {' or '.join(instead)}" if instead else ""))
