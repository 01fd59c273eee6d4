"""The W&B run of any stage, offline by default; `logger=none` gives a run that records nothing.

The `logger` config group is shared by the stages (`conf/logger/`: name wandb|none, mode, project,
entity). Offline runs live in `<out_dir>/wandb/offline-run-*`; upload them with `wandb sync`.
`WANDB_MODE` in the environment overrides `mode`. Training extends this with its lineage artifacts
(`train/lineage.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolturn.core.errors import ToolturnError


class NoRun:
    """logger=none."""

    run_dir: Path | None = None

    def log(self, metrics: dict[str, Any]) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbRun:
    """`run_id`: continue that run (a resumed stage), else a new one."""

    def __init__(self, logger_cfg, out_dir: Path, name: str, config: dict[str, Any], job_type: str,
                 run_id: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ToolturnError("logger=wandb needs the wandb package: pip install wandb (or use logger=none)") from None
        self.wandb = wandb
        self.mode = os.environ.get("WANDB_MODE") or logger_cfg.get("mode") or "offline"
        self.run = wandb.init(project=logger_cfg.get("project") or "toolturn", entity=logger_cfg.get("entity"),
                              id=run_id, resume="allow" if run_id else None, mode=self.mode, dir=str(out_dir),
                              name=name, config=config, job_type=job_type,
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        self.run_dir = Path(self.run.dir).parent if self.mode != "disabled" else None

    def log(self, metrics: dict[str, Any]) -> None:
        self.run.log(metrics)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        self.run.log({key: self.wandb.Table(columns=columns, data=rows)})

    def image(self, key: str, path: Path) -> None:
        self.run.log({key: self.wandb.Image(str(path))})

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.run.summary[k] = v

    def finish(self) -> None:
        self.run.finish()


def open_run(logger_cfg, out_dir: Path, name: str, config: dict[str, Any], job_type: str):
    kind = logger_cfg.get("name", "none")
    if kind == "none":
        return NoRun()
    if kind == "wandb":
        return WandbRun(logger_cfg, out_dir, name, config, job_type)
    raise ToolturnError(f"unknown logger {kind!r}; expected wandb or none")
