"""Experiment tracking: Weights & Biases (offline by default) or nothing, behind one small interface.

Lineage reads dataset -> model: the training data is an input artifact named by its content hash
(`dataset-<sha256[:16]>`, holding the manifest of ids per split), and the run's output artifact is the LoRA
adapter (train=lora) or the merged model (train=full). The run id is persisted in `<out_dir>/wandb_run_id`, so a
resumed run continues the same W&B run. Offline runs live in `<out_dir>/wandb/offline-run-*`; upload them with
`wandb sync <out_dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

import secrets
import string
import struct
from pathlib import Path
from typing import Any, Iterator, Protocol

from toolturn.core.errors import ToolturnError
from toolturn.core.wandb_run import NoRun, WandbRun

RUN_ID_FILE = "wandb_run_id"


class Tracker(Protocol):
    run_dir: Path | None

    def log(self, metrics: dict[str, float]) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def use_dataset(self, manifest: Path, content_sha256: str, metadata: dict[str, Any]) -> None: ...

    def log_model(self, model_dir: Path, kind: str, metadata: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class NoTracker(NoRun):
    """logger=none: nothing leaves metrics.json."""

    def use_dataset(self, manifest, content_sha256, metadata):
        pass

    def log_model(self, model_dir, kind, metadata):
        pass


class WandbTracker(WandbRun):
    """The training run: its id kept in `<out_dir>/wandb_run_id` (a resumed run continues it), metrics by
    global step, the dataset as input and the adapter or merged model as output artifact."""

    def __init__(self, logger_cfg, out_dir: Path, config: dict[str, Any], name: str):
        id_file = out_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else _new_run_id()
        id_file.write_text(run_id + "\n")
        super().__init__(logger_cfg, out_dir, name, config, job_type="train", run_id=run_id)
        self.run.define_metric("train/global_step")
        self.run.define_metric("*", step_metric="train/global_step", step_sync=True)

    def use_dataset(self, manifest, content_sha256, metadata):
        artifact = self.wandb.Artifact(f"dataset-{content_sha256[:16]}", type="dataset", metadata=metadata)
        artifact.add_file(str(manifest), name="manifest.json")
        if self.mode == "offline":
            # run.use_artifact refuses offline mode; for a new artifact it only records the artifact with
            # use_after_commit, which is what we do here (wandb sync then creates and marks it as this run's input).
            self.run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
        else:
            self.run.use_artifact(artifact)

    def log_model(self, model_dir, kind, metadata):
        artifact = self.wandb.Artifact(f"{kind}-{self.run.id}", type="model", metadata=metadata)
        # immutable + skip_cache: the files are referenced where they are instead of being copied to a staging dir
        artifact.add_dir(str(model_dir), policy="immutable", skip_cache=True)
        self.run.log_artifact(artifact, aliases=["best", "latest"])


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def make_tracker(logger_cfg, out_dir: Path, config: dict[str, Any], name: str) -> Tracker:
    kind = logger_cfg.get("name", "none")
    if kind == "none":
        return NoTracker()
    if kind == "wandb":
        return WandbTracker(logger_cfg, out_dir, config, name)
    raise ToolturnError(f"unknown logger {kind!r}; expected wandb or none")


def read_offline_run(path: str | Path) -> Iterator[Any]:
    """The records (wandb_internal_pb2.Record) of an offline run's `run-<id>.wandb` transaction log.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks,
    each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        path = next(path.glob("run-*.wandb"))
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero-filled rest of a block
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payload = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        else:
            payload, pending = pending + chunk, b""
        record = pb.Record()
        record.ParseFromString(payload)
        yield record
