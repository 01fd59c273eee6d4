"""What a run reports while it trains: tokens/s and padding fraction, progress, and tracker logging.

`MeteredSFTTrainer` counts, per optimizer step, the real tokens and the padded positions of every batch it
trains on, and adds `tokens_per_s`, `padding_fraction`, `tokens` and `step_time_s` to each training log entry
(so they land in `trainer_state.json`'s log history, metrics.json and W&B alike).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from trl import SFTTrainer


class MeteredSFTTrainer(SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._window = {"tokens": 0, "positions": 0, "time": 0.0}
        self._step_started: float | None = None

    def training_step(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        if "attention_mask" in inputs:
            real = int(inputs["attention_mask"].sum())
        else:  # padding-free: one flattened row; only pad_to_multiple_of padding (position 0 after the last sequence)
            real = int(ids.shape[1]) - int(_trailing_pad(inputs["position_ids"][0]))
        self._window["tokens"] += real
        self._window["positions"] += int(ids.numel())
        return super().training_step(model, inputs, *args, **kwargs)

    def step_began(self) -> None:
        self._step_started = time.perf_counter()

    def step_ended(self) -> None:
        if self._step_started is not None:
            self._window["time"] += time.perf_counter() - self._step_started
            self._step_started = None

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._window["positions"]:
            w = self._window
            logs["tokens"] = w["tokens"]
            logs["step_time_s"] = round(w["time"], 4)
            logs["tokens_per_s"] = round(w["tokens"] / w["time"], 2) if w["time"] else 0.0
            logs["padding_fraction"] = round(1 - w["tokens"] / w["positions"], 6)
            self._window = {"tokens": 0, "positions": 0, "time": 0.0}
        super().log(logs, *args, **kwargs)


def _trailing_pad(position_ids) -> int:
    """Trailing positions added by pad_to_multiple_of in a padding-free row (a run of zeros after the last token)."""
    nonzero = (position_ids != 0).nonzero()
    if len(nonzero) == 0:
        return 0
    return len(position_ids) - (int(nonzero[-1]) + 1)


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, optimizer), excluding evaluation and saving."""

    def __init__(self, trainer: MeteredSFTTrainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.step_began()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.step_ended()


class RelocateBest(TrainerCallback):
    """A resumed state names its best checkpoint by the path it had when saved; point it into this run's
    checkpoint dir, so that a copied or moved run dir never loads (or rotates) another run's checkpoints."""

    def __init__(self, ckpt_dir):
        self.ckpt_dir = Path(ckpt_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.best_model_checkpoint:
            state.best_model_checkpoint = str(self.ckpt_dir / Path(state.best_model_checkpoint).name)


class FinalEvalSave(TrainerCallback):
    """Evaluate and checkpoint at the last step too, so the best checkpoint is chosen over the whole run."""

    def __init__(self, has_eval: bool):
        self.has_eval = has_eval

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True
            control.should_evaluate = self.has_eval
        return control


def tracker_metrics(logs: dict, step: int) -> dict[str, float]:
    """A Trainer log entry as tracker metrics: `eval_loss` -> `eval/loss`, `loss` -> `train/loss`, by global step."""
    metrics = {"train/global_step": step}
    for key, value in logs.items():
        if isinstance(value, (int, float)):
            metrics[key.replace("eval_", "eval/", 1) if key.startswith("eval_") else f"train/{key}"] = value
    return metrics


class TrackerCallback(TrainerCallback):
    """Every log entry to the tracker. A resumed run first replays its checkpoint's log history (trainer_state.json,
    one entry per logged call, with its step) as far as the tracker does not hold it already."""

    def __init__(self, tracker):
        self.tracker = tracker

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            for entry in state.log_history:
                self._log({k: v for k, v in entry.items() if k != "step"}, entry["step"])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            self._log(logs, state.global_step)

    def _log(self, logs: dict, step: int) -> None:
        metrics = tracker_metrics(logs, step)
        if not self.tracker.holds(metrics):
            self.tracker.log(metrics)


class Progress(TrainerCallback):
    """A tqdm bar with loss and tokens/s on a terminal; one plain line per log entry otherwise."""

    def __init__(self, mode: str = "auto"):
        self.bar_mode = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        self.last_loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.bar_mode and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        if self.bar is not None:
            if "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", tok_s=f"{logs.get('tokens_per_s', 0):.0f}")
            if "eval_loss" in logs:
                self.bar.write(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")
            return
        if "loss" in logs:
            print(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                  f"lr {logs.get('learning_rate', 0):.2e} tokens/s {logs.get('tokens_per_s', 0):.0f} "
                  f"padding {100 * logs.get('padding_fraction', 0):.1f}%", flush=True)
        elif "eval_loss" in logs:
            print(f"step {state.global_step}/{state.max_steps} eval_loss {logs['eval_loss']:.4f}", flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
