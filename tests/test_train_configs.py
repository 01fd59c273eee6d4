"""Every train config composes with Hydra's compose API, and its parts parse into the recipe's typed specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from toolturn.train.data import DataOptions
from toolturn.train.models import ModelSpec
from toolturn.train.recipe import MethodSpec, TrainRecipe, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF / "train").glob("*.yaml"))
LOGGERS = sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


def make_cfg(*overrides: str):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_groups_are_the_documented_ones():
    """docs/train.md's knob table names every option of each group in that group's row: an option added to conf/
    without its documentation fails here."""
    rows = dict(re.findall(r"^\| `(\w+)=` \|(.*)$", (CONF.parent / "docs" / "train.md").read_text(), re.M))
    for group, names in (("model", MODELS), ("train", METHODS), ("logger", LOGGERS)):
        assert names and [n for n in names if f"`{n}`" not in rows[group]] == [], group


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("logger", LOGGERS)
def test_every_combination_composes(model, method, logger):
    cfg = make_cfg(f"model={model}", f"train={method}", f"logger={logger}", "data.paths=[runs/x]")
    validate(cfg)  # every shipped knob passes the check table; no key is unknown
    spec, m = ModelSpec.from_cfg(cfg.model), MethodSpec.from_cfg(cfg.train)
    assert spec.name == model and m.name == method and cfg.logger.name == logger
    options = DataOptions.from_cfg(cfg.data, cfg.seed)
    assert options.max_length == spec.max_length and options.paths == ("runs/x",)
    assert (m.lora is not None) == (method == "lora")
    assert cfg.out_dir == f"runs/train/{model}-{method}-s0"


def test_the_documented_settings_are_the_configs():
    """docs/train.md's knob table states each group's default and the methods' and paper models' settings: the
    composed configs must say the same (a config or a doc edited alone fails here)."""
    table = re.findall(r"^\| `(\w+)=` \| `(\w+)` \|(.*)$", (CONF.parent / "docs" / "train.md").read_text(), re.M)
    rows = {group: (default, meaning) for group, default, meaning in table}
    cfg = make_cfg()
    assert {g: rows[g][0] for g in ("model", "train", "logger")} == {
        "model": cfg.model.name, "train": cfg.train.name, "logger": cfg.logger.name}
    lora_doc = re.search(r"`lora` \(peft, `([\w-]+)`, r (\d+), LR ([\d.e-]+)\)", rows["train"][1]).groups()
    lora = MethodSpec.from_cfg(make_cfg("train=lora").train)
    assert (lora.lora.target_modules, lora.lora.r, lora.learning_rate) == (lora_doc[0], int(lora_doc[1]),
                                                                          float(lora_doc[2]))
    full_doc = re.search(r"`full` \(the paper's: AdamW, LR ([\d.e-]+), (\d+) epochs\)", rows["train"][1]).groups()
    full = MethodSpec.from_cfg(make_cfg("train=full").train)
    assert (full.optimizer, full.learning_rate, full.epochs, full.lora) == ("adamw_torch", float(full_doc[0]),
                                                                            int(full_doc[1]), None)
    paper = re.search(r"`qwen3_30b_a3b_thinking_2507` \(bf16, FlashAttention-2, (\d+)k context\)", rows["model"][1])
    for model in ("qwen3_4b_thinking_2507", "qwen3_30b_a3b_thinking_2507"):
        spec = ModelSpec.from_cfg(make_cfg(f"model={model}", "train=full").model)
        assert (spec.dtype, spec.attn_implementation, spec.max_length, spec.thinking) == (
            "bfloat16", "flash_attention_2", int(paper.group(1)) * 1024, True)


@pytest.mark.parametrize("model, override, reasoning", [
    ("qwen3_4b_thinking_2507", None, "keep"), ("qwen3_30b_a3b_thinking_2507", None, "keep"),
    ("tiny_qwen3", None, "drop"), ("smollm2_135m", None, "drop"),
    ("qwen3_4b_thinking_2507", "drop", "drop"), ("tiny_qwen3", "keep", "keep"),
])
def test_a_thinking_model_keeps_reasoning_unless_overridden(model, override, reasoning):
    overrides = [f"model={model}", "data.paths=[runs/x]"] + ([f"data.reasoning={override}"] if override else [])
    assert TrainRecipe(make_cfg(*overrides)).data_options.reasoning == reasoning


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "accelerate").glob("*.yaml")))
def test_accelerate_configs_load_with_accelerates_reader_and_match_the_models(name):
    """`accelerate launch --config_file` reads them with this loader (an unknown key or value fails it), and their
    mixed precision is the dtype the multi-GPU models are loaded in."""
    from accelerate.commands.config.config_args import load_config_from_file

    launch = load_config_from_file(str(CONF / "accelerate" / f"{name}.yaml"))
    for model in ("qwen3_4b_thinking_2507", "qwen3_30b_a3b_thinking_2507"):
        dtype = ModelSpec.from_cfg(make_cfg(f"model={model}", "train=full").model).dtype
        assert {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}[dtype] == str(launch.mixed_precision)


def test_auto_batching_follows_the_attention_kernel():
    import importlib.util

    import torch

    from toolturn.train.recipe import resolve_batching

    assert resolve_batching("auto", "sdpa") == "padding"
    flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    assert resolve_batching("auto", "flash_attention_2") == ("padding_free" if flash else "padding")
    assert resolve_batching("packing", "sdpa") == "packing"
