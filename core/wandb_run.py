"""The W&B run of any stage, offline by default; `logger=none` gives a run that records nothing.

The `logger` config group is shared by the stages (`conf/logger/`: name wandb|none, mode, project,
entity, group). `toolturn-run` puts every stage of an experiment into one group (`logger.group`), and
the stages link their inputs and outputs as artifacts named by content (`core/lineage.py`). Offline runs live in `<out_dir>/wandb/offline-run-*`; upload them with `wandb sync`.
`WANDB_MODE` in the environment overrides `mode`. Training extends this with its lineage artifacts
(`train/lineage.py`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import string
from pathlib import Path
from typing import Any

from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write
from toolturn.core.lineage import artifact_name, canonical


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

    def artifact(self, kind: str, manifest: dict, metadata: dict[str, Any], use: bool) -> None:
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
                              name=name, config=config, job_type=job_type, group=logger_cfg.get("group"),
                              # wandb's default returns a run still open in this process (another stage's, or a
                              # test's that failed before finishing) instead of this one
                              reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        self.run_dir = Path(self.run.dir).parent if self.mode != "disabled" else None
        self.out_dir = Path(out_dir)

    def log(self, metrics: dict[str, Any]) -> None:
        self.run.log(metrics)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        self.run.log({key: self.wandb.Table(columns=columns, data=rows)})

    def image(self, key: str, path: Path) -> None:
        self.run.log({key: self.wandb.Image(str(path))})

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.run.summary[k] = v

    def artifact(self, kind: str, manifest: dict, metadata: dict[str, Any], use: bool) -> None:
        """Log `manifest` (core/lineage.py) as artifact `<kind>-<sha16>`: this run's input (`use`) or output.
        Producer and consumer write the same bytes, so W&B sees one artifact version and links the runs."""
        name = artifact_name(kind, manifest)
        path = self.out_dir / ".lineage" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(canonical(manifest), encoding="utf-8")
        artifact = self.wandb.Artifact(name, type=kind, metadata=metadata)
        artifact.add_file(str(path), name="manifest.json")
        if not use:
            self.run.log_artifact(artifact)
        elif self.mode == "offline":
            # run.use_artifact refuses offline mode, and wandb has no public call for it; for a new artifact
            # use_artifact only records it with use_after_commit, which the private _log_artifact does here
            # (wandb sync then marks it as this run's input). wandb is pinned below 0.32 for it (pyproject.toml);
            # tests/test_generate.py checks the record this leaves in an offline run.
            self.run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
        else:
            self.run.use_artifact(artifact)

    def finish(self) -> None:
        self.run.finish()


def kept_run_id(path: Path) -> str:
    """The W&B run id kept in the file `path`, written on first use: a resumed stage continues the same W&B run."""
    if path.exists() and (run_id := path.read_text().strip()):
        return run_id
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    atomic_write(path, run_id + "\n")
    return run_id


def drop_earlier_offline_dirs(wandb_dir: Path, run_id: str, current: Path | None) -> None:
    """Remove the offline dirs of this run's earlier attempts: the continued run logs their content again, and
    `wandb sync` of several dirs with one id would upload overlapping histories."""
    for old in wandb_dir.glob(f"offline-run-*-{run_id}"):
        if current is None or old.resolve() != current.resolve():
            shutil.rmtree(old)


def open_run(logger_cfg, out_dir: Path, name: str, config: dict[str, Any], job_type: str,
             run_id_file: Path | None = None):
    """`run_id_file`: keep the run id there (`kept_run_id`), so that a re-run stage continues one W&B run; such a
    stage logs everything again, so offline, the earlier dirs of that run are removed."""
    kind = logger_cfg.get("name", "none")
    if kind == "none":
        return NoRun()
    if kind == "wandb":
        run_id = kept_run_id(run_id_file) if run_id_file is not None else None
        run = WandbRun(logger_cfg, out_dir, name, config, job_type, run_id)
        if run_id is not None and run.mode == "offline":
            drop_earlier_offline_dirs(Path(out_dir) / "wandb", run_id, run.run_dir)
        return run
    raise ToolturnError(f"unknown logger {kind!r}; expected wandb or none")
