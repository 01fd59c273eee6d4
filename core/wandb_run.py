"""A W&B run for a stage that logs a few summaries and tables (evaluation), offline by default.

The `logger` config group is shared with training (`conf/logger/`: name wandb|none, mode, project,
entity). Offline runs live in `<out_dir>/wandb/offline-run-*`; upload them with `wandb sync`.
`WANDB_MODE` in the environment overrides `mode`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolturn.core.errors import ToolturnError


class NoRun:
    """logger=none."""

    run_dir: Path | None = None

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbRun:
    def __init__(self, logger_cfg, out_dir: Path, name: str, config: dict[str, Any], job_type: str):
        try:
            import wandb
        except ImportError:
            raise ToolturnError("logger=wandb needs the wandb package: pip install wandb (or use logger=none)") from None
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or logger_cfg.get("mode") or "offline"
        self.run = wandb.init(project=logger_cfg.get("project") or "toolturn", entity=logger_cfg.get("entity"),
                              mode=mode, dir=str(out_dir), name=name, config=config, job_type=job_type,
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        self.run_dir = Path(self.run.dir).parent if mode != "disabled" else None

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
