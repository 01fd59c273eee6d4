"""The memory of a CPU training run: what is available, the shape of the worst step, the pre-flight estimate
against the peaks measured on the 2-core 24 GB machine, and the one-line refusal."""

from __future__ import annotations

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


def test_peak_rss_is_this_process_at_least():
    import resource

    assert peak_rss_mb() >= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 0


CONFIG = SimpleNamespace(get_text_config=lambda: SimpleNamespace(hidden_size=576, num_hidden_layers=30,
                                                                  num_attention_heads=9, vocab_size=49152))


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
    assert (shape.hidden, shape.layers, shape.heads, shape.vocab) == (576, 30, 9, 49152)


def smollm2(rows: int, longest: int, *, gc: bool = True, full: bool = False) -> StepShape:
    masked = rows if rows > 1 else 0
    return StepShape(parameters=134_515_008 if full else 139_399_488, trainable=134_515_008 if full else 4_884_480,
                     hidden=576, layers=30, heads=9, vocab=49152, dtype="float32", rows=rows, longest=longest,
                     positions=rows * longest, attended=longest, masked_rows=masked, gradient_checkpointing=gc)


def tiny(rows: int, longest: int, *, gc: bool) -> StepShape:
    return StepShape(parameters=300_000, trainable=30_000, hidden=64, layers=2, heads=4, vocab=4096, dtype="float32",
                     rows=rows, longest=longest, positions=rows * longest, attended=longest,
                     masked_rows=rows if rows > 1 else 0, gradient_checkpointing=gc)


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
