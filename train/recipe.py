"""toolturn-train: one recipe that reads top to bottom (setup, train, save_checkpoint, merge, cleanup).

    toolturn-train model=tiny_qwen3 train=lora data.paths=[RUN_DIR,...] max_steps=30 seed=0 out_dir=OUT

On CPU, a run whose estimated peak memory exceeds what the machine has is refused before the model is loaded
(train/memory.py). OUT ends up holding:

    config.yaml          the resolved config (a re-run with other settings is refused)
    data_manifest.json   the dataset's content hash, sources, filter options and the ids of each split
    metrics.json         loss/eval-loss/learning-rate/tokens-per-s/padding history, data-filter counts, best step,
                         peak RSS and its estimate, merged/'s content identity
    checkpoints/         HF Trainer checkpoints (the best by validation loss and the latest are kept)
    adapter/             train=lora: the best LoRA adapter (vLLM --lora-modules)
    merged/              a standalone HF model dir (LoRA merged in) with our chat template in its tokenizer
                         (both with toolturn_lineage.json: tool offer, base model, method, sources; train/lineage.py)
    wandb_run_id, wandb/ the W&B run (offline by default)

Re-running the same command resumes from the last complete checkpoint (same step, same data order, same W&B
run, one history); re-running a finished run only prints where its outputs are.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import resource
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from toolturn.core.checks import (BOOL, LOGGER_ADDABLE, POSITIVE, PROBABILITY, Check, check_table, integer, is_int,
                                  is_number, maybe, plain_config)
from toolturn.core.cli import precheck
from toolturn.core.errors import ToolturnError
from toolturn.core.lineage import identity_manifest, model_identity

from .data import (INVALID_POLICIES, OVERLONG_POLICIES, REASONING_CHOICES, DataOptions, PreparedData, dataset_dir,
                   prepare, to_hf)
from .lineage import make_tracker, source_manifest, training_lineage, write_lineage
from .memory import available_mb, cap_malloc_arenas, check_fits, count_parameters, estimate_peak_mb, peak_rss_mb, step_shape
from .models import (DTYPES, SOURCES, ModelSpec, attn_implementation, load_model, model_config, save_tokenizer,
                     tokenizer_for)

BATCHING = ("auto", "padding", "padding_free", "packing")
PROGRESS = ("auto", "bar", "lines")
IGNORED_ON_RESUME = ("progress", "out_dir")  # may differ between a run and its resumption (a run dir can move)


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"


@dataclass(frozen=True)
class MethodSpec:
    """What `conf/train/<name>.yaml` says about the training method."""

    name: str
    lora: LoraSpec | None
    optimizer: str = "adamw_torch"
    learning_rate: float = 1e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 1
    batch_size: int = 2
    grad_accum: int = 1
    batching: str = "auto"
    gradient_checkpointing: bool = False
    token_budget: int | None = None  # train until about this many tokens went through the model (sets max_steps)

    @classmethod
    def from_cfg(cls, cfg) -> "MethodSpec":
        """The spec of a method config whose knobs passed the check table."""
        d = OmegaConf.to_container(cfg, resolve=True)
        lora = d.pop("lora", None)
        return cls(lora=LoraSpec(**lora) if lora else None, **d)


def lora_config(lora: LoraSpec):
    from peft import LoraConfig

    target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target,
                      task_type="CAUSAL_LM")


def one_of(*choices: str) -> Check:
    return Check(f"one of {', '.join(choices)}", lambda v: v in choices)


def or_null(check: Check) -> Check:
    return Check(f"null or {check.must_be}", lambda v: v is None or check.ok(v))


TEXT = Check("a non-empty string", lambda v: isinstance(v, str) and v != "")
FRACTION = Check("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1)
NON_NEGATIVE = Check("a non-negative number", lambda v: is_number(v) and v >= 0)
STRINGS = Check("a string or a list of strings", lambda v: isinstance(v, str) or (isinstance(v, list) and all(
    isinstance(x, str) for x in v)))
CHECKS: dict[str, Check] = {
    "seed": integer(0), "eval_steps": integer(1), "logging_steps": integer(1),
    "max_steps": Check("-1 (train.epochs decide) or a positive integer", lambda v: is_int(v) and (v == -1 or v > 0)),
    "save_total_limit": or_null(integer(1)), "progress": one_of(*PROGRESS), "out_dir": TEXT,
    "model.name": TEXT, "model.source": one_of(*SOURCES), "model.path": or_null(TEXT), "model.tokenizer": or_null(TEXT),
    "model.tokenizer_vocab": maybe(or_null(integer(1))), "model.dtype": one_of(*DTYPES),
    "model.attn_implementation": TEXT, "model.thinking": BOOL, "model.max_length": integer(1),
    "model.init_seed": maybe(integer(0)),
    "model.arch": maybe(or_null(Check("a mapping of Qwen3Config fields", lambda v: isinstance(v, dict)))),
    "train.name": TEXT, "train.lora": or_null(Check("a mapping", lambda v: isinstance(v, dict))),
    "train.optimizer": TEXT, "train.learning_rate": POSITIVE, "train.lr_scheduler": TEXT,
    # below 1 it is a ratio of the total steps for transformers (a larger value would be a number of steps)
    "train.warmup_ratio": FRACTION,
    "train.weight_decay": NON_NEGATIVE, "train.max_grad_norm": NON_NEGATIVE, "train.epochs": POSITIVE,
    "train.batch_size": integer(1), "train.grad_accum": integer(1), "train.batching": one_of(*BATCHING),
    "train.gradient_checkpointing": BOOL, "train.token_budget": maybe(or_null(integer(1))),
    # after model.*: data.max_length is ${model.max_length} unless set
    "data.paths": STRINGS,
    "data.weights": or_null(Check("a list of positive numbers", lambda v: isinstance(v, list) and all(
        POSITIVE.ok(w) for w in v))),
    "data.val_fraction": FRACTION,
    "data.invalid": one_of(*INVALID_POLICIES), "data.overlong": one_of(*OVERLONG_POLICIES),
    "data.reasoning": one_of(*REASONING_CHOICES), "data.max_length": integer(1),
}
LORA_CHECKS: dict[str, Check] = {  # where train.lora is a mapping
    "train.lora.r": maybe(integer(1)), "train.lora.alpha": maybe(POSITIVE), "train.lora.dropout": maybe(PROBABILITY),
    "train.lora.target_modules": maybe(STRINGS),
}
# The keys each spec reads: any other key in its group (`+model.foo=1`) is a typo, refused by name.
SPEC_KEYS = {"model": ModelSpec, "train": MethodSpec, "train.lora": LoraSpec, "data": DataOptions}
NOT_CONFIG = {"data": {"seed"}}  # set from the top-level key
# keys that `+key=value` may add (core/cli.precheck): any in the specs' groups (_unknown_keys names what each
# takes) and the logger's; any other added key is an error
ADDABLE_KEYS = ("model.**", "train.**", "data.**", *LOGGER_ADDABLE)


def _unknown_keys(plain: dict) -> None:
    for group, spec in SPEC_KEYS.items():
        node = plain
        for part in group.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        known = {f.name for f in fields(spec)} - NOT_CONFIG.get(group, set())
        unknown = sorted(set(node) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean '{group}.{close[0]}'?" if close else f"{group} takes {', '.join(sorted(known))}"
            raise ToolturnError(f"unknown config key '{group}.{unknown[0]}' ({hint})")


def validate(cfg: DictConfig) -> None:
    """Every knob's type and range, unknown keys of the groups, then the specs' own checks (before anything runs)."""
    plain = plain_config(cfg)
    _unknown_keys(plain)
    check_table(plain, CHECKS)
    if plain["train"]["lora"] is not None:
        check_table(plain, LORA_CHECKS)
    model = ModelSpec.from_cfg(cfg.model)
    MethodSpec.from_cfg(cfg.train)
    DataOptions.from_cfg(cfg.data, cfg.seed, model.thinking)


@dataclass
class Outputs:
    out_dir: Path
    best: Path | None
    merged: Path
    adapter: Path | None
    wandb: Path | None

    def line(self) -> str:
        parts = {"config": self.out_dir / "config.yaml", "metrics": self.out_dir / "metrics.json", "best": self.best,
                 "merged": self.merged, "adapter": self.adapter, "wandb": self.wandb}
        return "done: " + " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


def resolve_batching(batching: str, attn: str) -> str:
    """`auto`: padding-free where a varlen attention kernel exists (FlashAttention-2), plain padding elsewhere.
    Under sdpa a padding-free row gets a block-diagonal mask over the whole flattened batch, so attention costs
    (sum of lengths)^2 instead of the sum of squares: benchmarks/train_throughput.py measures it slower on CPU."""
    if batching != "auto":
        return batching
    return "padding_free" if attn_implementation(attn) == "flash_attention_2" else "padding"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The highest-step checkpoint that was written completely (trainer_state.json is saved last)."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


class TrainRecipe:
    def __init__(self, cfg: DictConfig):
        validate(cfg)  # again: a multirun job did not pass through precheck
        self.cfg = cfg
        self.model_spec = ModelSpec.from_cfg(cfg.model)
        self.method = MethodSpec.from_cfg(cfg.train)
        self.data_options = DataOptions.from_cfg(cfg.data, cfg.seed, self.model_spec.thinking)
        self.batching = resolve_batching(self.method.batching, self.model_spec.attn_implementation)
        self.out = Path(cfg.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.tracker = None

    # ---------------------------------------------------------------------------------------------- setup

    def finished(self) -> Outputs | None:
        """The outputs of a run that already completed in out_dir, if any."""
        metrics = self.out / "metrics.json"
        if self._check_config() and metrics.exists():
            m = json.loads(metrics.read_text())
            if m.get("complete"):
                return self._outputs(m["best"]["checkpoint"], m.get("wandb_dir"))
        return None

    def _check_config(self) -> bool:
        """True if out_dir holds a run with the same config, False if it is new; a different config is refused."""
        saved = self.out / "config.yaml"
        current = OmegaConf.to_container(self.cfg, resolve=True)
        if not saved.exists():
            return False
        previous = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        differ = sorted(k for k in set(current) | set(previous)
                        if k not in IGNORED_ON_RESUME and current.get(k) != previous.get(k))
        if differ:
            raise ToolturnError(f"{self.out} holds a run with different settings ({', '.join(differ)}); "
                                f"re-run with the same settings to resume, or choose another out_dir")
        return True

    def setup(self) -> None:
        # before the tokenizer's and torch's threads allocate: so that the peak, like the estimate, does not grow
        # with the load on the CPU
        cap_malloc_arenas()
        new_run = not self._check_config()
        for path in self.data_options.paths:  # bad paths fail before anything heavy is loaded
            dataset_dir(path)
        self.tokenizer = tokenizer_for(self.model_spec)
        self.data: PreparedData = prepare(self.data_options, self.tokenizer)
        self.memory_estimate = self._check_memory()
        self.model = load_model(self.model_spec, self.tokenizer)
        if _is_main_process():
            self.out.mkdir(parents=True, exist_ok=True)
            if new_run:  # written once the inputs are known to be good, so a failed start never blocks a retry
                OmegaConf.save(self.cfg, self.out / "config.yaml", resolve=True)
            manifest = json.dumps(self.data.manifest(self.data_options), indent=1) + "\n"
            (self.out / "data_manifest.json").write_text(manifest)
        self._setup_peft()
        config = {**OmegaConf.to_container(self.cfg, resolve=True), "data_report": self.data.report.as_dict()}
        if _is_main_process():
            self.sources = [source_manifest(path) for path in self.data_options.paths]
            self.tracker = make_tracker(self.cfg.logger, self.out, config, name=self.out.name)
            self.tracker.summary({f"data/{k}": v for k, v in self.data.report.flat().items()})
            for source, report in zip(self.sources, self.data.report.sources):
                self.tracker.artifact("dataset", source, report, use=True)
        self.trainer = self._setup_trainer()

    def _check_memory(self) -> float | None:
        """The estimated peak RSS of a CPU run (train/memory.py), refused before the model is loaded when it exceeds
        the memory available; None on a GPU, where activations live in device memory."""
        import torch

        if torch.cuda.is_available():
            return None
        config = model_config(self.model_spec, self.tokenizer)
        lora = lora_config(self.method.lora) if self.method.lora is not None else None
        shape = step_shape(config, count_parameters(config, lora), self.model_spec.dtype, self.batching,
                           self.method.batch_size, [len(e.input_ids) for e in self.data.train + self.data.val],
                           self.data_options.max_length, self.method.gradient_checkpointing)
        estimate, available = estimate_peak_mb(shape), available_mb()
        check_fits(shape, estimate, available, self.data_options.max_length)
        if _is_main_process():
            print(f"memory: estimated peak {estimate / 1024:.1f} GB"
                  + (f" of {available / 1024:.1f} GB available" if available is not None else ""), flush=True)
        return round(estimate, 1)

    def _setup_peft(self) -> None:
        from transformers import set_seed

        set_seed(int(self.cfg.seed))  # LoRA's initial weights
        if self.method.lora is None:
            return
        from peft import get_peft_model

        self.model = get_peft_model(self.model, lora_config(self.method.lora))

    def _sft_config(self):
        import torch
        from trl import SFTConfig

        m, cfg, batching = self.method, self.cfg, self.batching
        has_eval = bool(self.data.val)
        return SFTConfig(
            output_dir=str(self.ckpt_dir),
            seed=int(cfg.seed), data_seed=int(cfg.seed),
            max_steps=self.max_steps(), num_train_epochs=float(m.epochs),
            per_device_train_batch_size=m.batch_size, per_device_eval_batch_size=m.batch_size,
            gradient_accumulation_steps=m.grad_accum,
            optim=m.optimizer, learning_rate=m.learning_rate, lr_scheduler_type=m.lr_scheduler,
            warmup_steps=m.warmup_ratio,  # a float below 1 is a ratio of the total steps
            weight_decay=m.weight_decay, max_grad_norm=m.max_grad_norm,
            activation_checkpointing=m.gradient_checkpointing,
            # transformers 5 defaults to non-reentrant checkpointing, which keeps far more of each layer: SmolLM2 LoRA's
            # backbone on 2,000 tokens peaked 1.4 GB above the weights reentrant and 3.1 GB non-reentrant (4.3 without).
            activation_checkpointing_kwargs={"use_reentrant": True} if m.gradient_checkpointing else None,
            bf16=self.model_spec.dtype == "bfloat16", use_cpu=not torch.cuda.is_available(),
            logging_steps=int(cfg.logging_steps),
            eval_strategy="steps" if has_eval else "no", eval_steps=int(cfg.eval_steps),
            save_strategy="steps", save_steps=int(cfg.eval_steps), save_total_limit=cfg.save_total_limit,
            load_best_model_at_end=has_eval, metric_for_best_model="eval_loss", greater_is_better=False,
            report_to="none", disable_tqdm=True, dataloader_num_workers=0,
            # Rows arrive tokenized, with assistant masks from our template, and already fit max_length.
            assistant_only_loss=False, completion_only_loss=False,
            padding_free=batching == "padding_free",
            packing=batching == "packing", packing_strategy="bfd",
            max_length=self.data_options.max_length if batching == "packing" else None,
        )

    def max_steps(self) -> int:
        """`max_steps`, or with `train.token_budget` the steps that put about that many tokens through the model:
        budget / (mean tokens per training row x rows per step), so that arms trained on datasets of different
        row lengths see the same number of tokens (metrics.json's train_tokens is the measured count)."""
        budget, m = self.method.token_budget, self.method
        if budget is None:
            return int(self.cfg.max_steps)
        if int(self.cfg.max_steps) != -1:
            raise ToolturnError("set max_steps or train.token_budget, not both")
        rows = self.data.train
        per_step = sum(len(e.input_ids) for e in rows) / len(rows) * m.batch_size * m.grad_accum * _world_size()
        return max(1, round(budget / per_step))

    def _setup_trainer(self):
        from transformers import PrinterCallback

        from .monitor import FinalEvalSave, MeteredSFTTrainer, Progress, RelocateBest, StepTimer, TrackerCallback

        trainer = MeteredSFTTrainer(
            model=self.model, args=self._sft_config(), processing_class=self.tokenizer,
            train_dataset=to_hf(self.data.train), eval_dataset=to_hf(self.data.val) if self.data.val else None,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(StepTimer(trainer))
        trainer.add_callback(RelocateBest(self.ckpt_dir))
        trainer.add_callback(FinalEvalSave(bool(self.data.val)))
        trainer.add_callback(Progress(str(self.cfg.progress)))
        if self.tracker is not None:
            trainer.add_callback(TrackerCallback(self.tracker))
        return trainer

    # ---------------------------------------------------------------------------------------------- train

    def train(self) -> None:
        resume = last_checkpoint(self.ckpt_dir)
        if resume is not None:
            print(f"resuming from {resume}", flush=True)
        self.trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    # ---------------------------------------------------------------------------------------------- save

    def save_checkpoint(self) -> Outputs:
        """Write adapter/ (LoRA) and merged/, each with toolturn_lineage.json, and metrics.json from the best checkpoint
        (loaded at the end of training); merged/'s content identity is the run's output artifact."""
        state = self.trainer.state
        best = state.best_model_checkpoint or (str(last_checkpoint(self.ckpt_dir)) if last_checkpoint(self.ckpt_dir) else None)
        wandb_dir = str(self.tracker.run_dir) if self.tracker is not None and self.tracker.run_dir else None
        if not self.trainer.is_world_process_zero():
            return self._outputs(best, wandb_dir)
        merged = self.out / "merged"
        lineage = training_lineage(self.data_options.paths, self.sources, self._base_name(), self.method.name, self.out)
        if self.method.lora is not None:
            adapter = self.out / "adapter"
            self.trainer.model.save_pretrained(str(adapter))
            write_lineage(adapter, lineage)
            self.merge(merged)
        else:
            self.trainer.save_model(str(merged))
            save_tokenizer(self.tokenizer, merged, self.model_spec.max_length)
        write_lineage(merged, lineage)
        identity = model_identity(merged)
        metrics = self._metrics(best, wandb_dir, identity)
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        self.tracker.artifact("model", identity_manifest(identity), {
            "base_model": lineage["base_model"], "method": lineage["method"], "best_checkpoint": best,
            "tools_per_dialogue": lineage["tools_per_dialogue"]}, use=False)
        self.tracker.summary({"best/eval_loss": metrics["best"]["eval_loss"], "best/step": metrics["best"]["step"]})
        return self._outputs(best, wandb_dir)

    def merge(self, merged: Path) -> None:
        """Fold the LoRA weights into the base model and save a standalone HF model dir with our template."""
        model = self.trainer.model.merge_and_unload()
        model.save_pretrained(str(merged))
        save_tokenizer(self.tokenizer, merged, self.model_spec.max_length)

    def _base_name(self) -> str:
        return self.model_spec.path or self.model_spec.name

    def _metrics(self, best: str | None, wandb_dir: str | None, identity: dict) -> dict[str, Any]:
        history = self.trainer.state.log_history
        train = [{k: v for k, v in h.items() if k in ("step", "epoch", "loss", "learning_rate", "grad_norm",
                                                       "tokens", "step_time_s", "tokens_per_s", "padding_fraction")}
                 for h in history if "loss" in h]
        evals = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h]
        best_eval = min(evals, key=lambda e: e["eval_loss"]) if evals else None
        tokens = sum(h.get("tokens", 0) for h in train)
        seconds = sum(h.get("step_time_s", 0) for h in train)
        positions = sum(h.get("tokens", 0) / (1 - h["padding_fraction"]) for h in train if "padding_fraction" in h)
        return {
            "complete": True,
            "model": self.model_spec.name, "method": self.method.name, "batching": self.batching,
            "steps": self.trainer.state.global_step,
            "train_loss": train[-1]["loss"] if train else None,
            "history": train, "eval": evals,
            "best": {"step": best_eval["step"] if best_eval else self.trainer.state.global_step,
                     "eval_loss": best_eval["eval_loss"] if best_eval else None, "checkpoint": best},
            "tokens_per_s": round(tokens / seconds, 2) if seconds else None,
            "padding_fraction": round(1 - tokens / positions, 6) if positions else None,
            "train_tokens": tokens,
            "data": self.data.report.as_dict(),
            "peak_rss_mb": peak_rss_mb(), "peak_rss_children_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
            "peak_rss_estimate_mb": self.memory_estimate,
            "model_identity": identity,
            "wandb_dir": wandb_dir,
        }

    def _outputs(self, best: str | None, wandb_dir: str | None) -> Outputs:
        return Outputs(out_dir=self.out, best=Path(best) if best else None, merged=self.out / "merged",
                       adapter=self.out / "adapter" if self.method.lora is not None else None,
                       wandb=Path(wandb_dir) if wandb_dir else None)

    def cleanup(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
            self.tracker = None


def train(cfg: DictConfig) -> Outputs:
    recipe = TrainRecipe(cfg)
    done = recipe.finished()
    if done is not None:
        print(f"{recipe.out} already holds a finished run", flush=True)
        return done
    try:
        recipe.setup()
        recipe.train()
        return recipe.save_checkpoint()
    finally:
        recipe.cleanup()


@hydra.main(version_base="1.3", config_path="pkg://toolturn.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    for name in ("transformers", "trl", "peft", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        outputs = train(cfg)
    except ToolturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(outputs.line(), flush=True)


def main() -> None:
    precheck(sys.argv[1:], "train", validate, ADDABLE_KEYS)
    _hydra_main()


if __name__ == "__main__":
    main()
