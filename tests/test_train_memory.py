"""The memory of a CPU training run: what is available, the shape of the worst step, the pre-flight estimate
against the peaks measured on the 2-core 24 GB machine, and the one-line refusal."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from toolturn.core.errors import ToolturnError
from toolturn.train.memory import StepShape, available_mb, check_fits, estimate_peak_mb, peak_rss_mb, step_shape

GB = 1024


def meminfo(tmp_path, available_kb: int):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       24683792 kB\nMemFree:        1000 kB\nMemAvailable:   {available_kb} kB\n")
    return path


def cgroup(tmp_path, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize("files, expected", [
    ({}, 20 * GB),  # no cgroup files: MemAvailable
    ({"memory.max": "max", "memory.current": "0"}, 20 * GB),  # cgroup v2 without a limit
    ({"memory.max": str(8 << 30), "memory.current": str(2 << 30)}, 6 * GB),  # v2: the limit leaves less
    ({"memory.max": str(64 << 30), "memory.current": str(2 << 30)}, 20 * GB),  # v2: the machine has less
    ({"memory/memory.limit_in_bytes": str(4 << 30), "memory/memory.usage_in_bytes": str(1 << 30)}, 3 * GB),  # v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "0"}, 20 * GB),
])
def test_available_is_the_tighter_of_meminfo_and_the_cgroup(tmp_path, files, expected):
    assert available_mb(meminfo(tmp_path, 20 << 20), cgroup(tmp_path, files)) == expected


def test_available_is_unknown_without_either(tmp_path):
    assert available_mb(tmp_path / "none", tmp_path / "none") is None


def test_peak_rss_of_this_process_and_of_a_finished_child():
    """In a fresh process (this one's children may have peaked higher): a child that held 1 GiB, more than the
    probe itself (which imports the training package: a few hundred MB)."""
    probe = ("import resource, subprocess, sys\n"
             "from toolturn.train.memory import peak_rss_mb\n"
             "subprocess.run([sys.executable, '-c', 'x = b\"1\" * (1024 << 20)'], check=True)\n"
             "print(peak_rss_mb(), peak_rss_mb(resource.RUSAGE_CHILDREN))\n")
    own, child = map(float, subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                           check=True).stdout.split())
    assert 0 < own < 1024 <= child < 1124


CONFIG = SimpleNamespace(get_text_config=lambda: SimpleNamespace(hidden_size=576, num_hidden_layers=30,
                                                                  vocab_size=49152))


@pytest.mark.parametrize("batching, batch_size, expected", [
    # rows, longest, positions, attended, masked rows
    ("padding", 2, (2, 5000, 10000, 5000, 2)),  # the two longest rows, padded to the longest
    ("padding", 1, (1, 5000, 5000, 5000, 0)),  # one row needs no mask: sdpa's causal kernel
    ("padding", 8, (3, 5000, 15000, 5000, 3)),  # no more rows than the data has
    ("padding_free", 2, (2, 5000, 9000, 9000, 1)),  # one flattened row, block-diagonal mask
    ("packing", 2, (2, 5000, 16384, 16384, 1)),  # rows of max_length, flattened
])
def test_the_worst_step(batching, batch_size, expected):
    shape = step_shape(CONFIG, (135_000_000, 4_900_000), "float32", batching, batch_size, [3000, 5000, 4000],
                       8192, True)
    assert (shape.rows, shape.longest, shape.positions, shape.attended, shape.masked_rows) == expected
    assert (shape.hidden, shape.layers, shape.vocab) == (576, 30, 49152)


def smollm2(rows: int, longest: int, *, gc: bool = True, full: bool = False) -> StepShape:
    masked = rows if rows > 1 else 0
    return StepShape(parameters=134_515_008 if full else 139_399_488, trainable=134_515_008 if full else 4_884_480,
                     hidden=576, layers=30, vocab=49152, dtype="float32", rows=rows, longest=longest,
                     positions=rows * longest, attended=longest, masked_rows=masked, gradient_checkpointing=gc)


def tiny(rows: int, longest: int, *, gc: bool) -> StepShape:
    return StepShape(parameters=369_024, trainable=32_768, hidden=64, layers=2, vocab=4096, dtype="float32",
                     rows=rows, longest=longest, positions=rows * longest, attended=longest,
                     masked_rows=rows if rows > 1 else 0, gradient_checkpointing=gc)


# Peaks measured on the 2-core 24 GB machine: metrics.json's peak_rss_mb of `toolturn-train ... train=lora|full
# max_steps=1 data.val_fraction=0 train.batch_size=1|2 train.gradient_checkpointing=...` on rows of exactly `longest`
# tokens (two rows: `longest` and 0.9 of it, so the batch is padded), and on generated user-oriented dialogues (uo).
MEASURED = [  # (shape, peak MB)
    (smollm2(1, 512), 1725), (smollm2(1, 1022), 2344), (smollm2(1, 2047), 3597), (smollm2(1, 4095), 5944),
    (smollm2(1, 6144), 6336), (smollm2(2, 1023), 3574), (smollm2(2, 2047), 6128), (smollm2(2, 4094), 6794),
    (smollm2(2, 6142), 8314),
    (smollm2(1, 512, gc=False), 2627), (smollm2(1, 1022, gc=False), 5204), (smollm2(1, 2047, gc=False), 9360),
    (smollm2(2, 1023, gc=False), 9770), (smollm2(2, 2047, gc=False), 18789),
    (smollm2(1, 1984, gc=False), 7116), (smollm2(1, 2777, gc=False), 12227), (smollm2(2, 2034, gc=False), 18842),  # uo
    (smollm2(1, 2047, full=True), 3428), (smollm2(2, 2047, full=True), 6210),
    (tiny(2, 2047, gc=False), 1211), (tiny(2, 2047, gc=True), 1091), (tiny(2, 4096, gc=False), 1506),
    (tiny(2, 4096, gc=True), 1128), (tiny(2, 8192, gc=False), 2487), (tiny(2, 8192, gc=True), 1451),
]


@pytest.mark.parametrize("shape, peak", MEASURED)
def test_the_estimate_bounds_every_measured_peak(shape, peak):
    # tight for the default (SmolLM2 LoRA with checkpointing); a full run's first step has no Adam moments yet
    loose = shape.trainable == shape.parameters or shape.layers == 2 or not shape.gradient_checkpointing
    assert peak <= estimate_peak_mb(shape) <= peak * (2.0 if loose else 1.15)


def test_the_default_smollm2_step_fits_with_checkpointing_only():
    """2 x 4096 tokens: about 36 GB without gradient checkpointing (the kernel killed it), 7.6 GB with it."""
    assert estimate_peak_mb(smollm2(2, 4096, gc=False)) > 24 * GB > 8 * GB > estimate_peak_mb(smollm2(2, 4096))


def test_check_fits_names_the_estimate_the_memory_and_the_knobs():
    shape = smollm2(2, 4096, gc=False)
    check_fits(shape, 30 * GB, None, 4096)  # unknown memory: no refusal
    check_fits(shape, 20 * GB, 21 * GB, 4096)
    with pytest.raises(ToolturnError) as e:
        check_fits(shape, 38.5 * GB, 22.25 * GB, 4096)
    assert str(e.value) == (
        "this run needs about 38.5 GB of memory at its peak (estimated from 139M parameters, 2 x 4096 tokens per "
        "step, a 49,152-token vocabulary, float32, gradient checkpointing off) but 22.2 GB is available; lower "
        "train.batch_size (2; a larger train.grad_accum keeps the batch) or data.max_length (4096; the longest row "
        "has 4096 tokens), or set train.gradient_checkpointing=true")
    with pytest.raises(ToolturnError, match=r"lower data.max_length \(8192; the longest row has 8000 tokens\), or "
                                            r"use train=lora$"):
        check_fits(smollm2(1, 8000, full=True), 30 * GB, 20 * GB, 8192)


def test_the_malloc_arena_cap_holds_however_many_threads_allocate(tmp_path):
    """glibc adds an arena whenever an allocating thread finds the others locked, up to 8 per core (16 here for 8
    threads of small torch matmuls, which allocate without the GIL); capped at 2, they share 2 (malloc_info's count,
    in a fresh process)."""
    probe = f"""
import ctypes, threading
import torch
from toolturn.train.memory import cap_malloc_arenas
assert cap_malloc_arenas(2)
torch.set_num_threads(1)
x = torch.ones(64, 64)
def work():
    for _ in range(3000):
        (x @ x).sum()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
stream = ctypes.c_void_p(libc.fopen({str(tmp_path / 'info.xml').encode()!r}, b"w"))
libc.malloc_info(0, stream)
libc.fclose(stream)
"""
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert 1 <= (tmp_path / "info.xml").read_text().count("<heap nr=") <= 2
