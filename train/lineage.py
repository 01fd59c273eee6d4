"""The training run's lineage and experiment tracking: Weights & Biases (offline by default) or nothing, behind one
small interface, and `toolturn_lineage.json` beside the trained weights.

Lineage reads dataset -> model, by content (core/lineage.py): every source in data.paths is an input artifact
`dataset-<sha16>` (a generation run dir: the manifest of its records, the same artifact its generation run logged
as output; any other saved HF dataset: the hashes of its files), and merged/'s weights are the output artifact
`model-<sha16>`. The same facts go into merged/ and adapter/ as `toolturn_lineage.json` (base model, method,
sources, and the `tools_per_dialogue` the data was generated with, which evaluation offers the model again), so
they travel with the weights, with logger=none too.

The run id is persisted in `<out_dir>/wandb_run_id`, so a resumed run continues the same W&B run. What a killed run
logged last may never have reached W&B (its writer dies with it), so a resumed run first logs again the part of its
checkpoint's history (`trainer_state.json`) that W&B does not hold: offline, all of it, into a new
`<out_dir>/wandb/offline-run-*` that replaces the killed run's dir, so one dir holds the whole history; online, what
comes after the last step the server has. Upload with `wandb sync <out_dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

import secrets
import shutil
import string
import struct
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import yaml
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write_json
from toolturn.core.lineage import dataset_manifest, hf_dataset_manifest
from toolturn.core.rundir import RunDir
from toolturn.core.wandb_run import NoRun, WandbRun

from .data import dataset_dir

RUN_ID_FILE = "wandb_run_id"
LINEAGE_FILE = "toolturn_lineage.json"  # evaluation reads tools_per_dialogue from it: keep the name and the key
STEP_KEY = "train/global_step"


class Tracker(Protocol):
    run_dir: Path | None

    def log(self, metrics: dict[str, float]) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def artifact(self, kind: str, manifest: dict, metadata: dict[str, Any], use: bool) -> None: ...

    def holds(self, metrics: dict[str, float]) -> bool: ...

    def finish(self) -> None: ...


class NoTracker(NoRun):
    """logger=none: nothing leaves metrics.json."""

    def holds(self, metrics: dict[str, float]) -> bool:
        return False


class WandbTracker(WandbRun):
    """The training run: its id kept in `<out_dir>/wandb_run_id` (a resumed run continues it), metrics by
    global step, the sources as input and merged/ as output artifacts."""

    def __init__(self, logger_cfg, out_dir: Path, config: dict[str, Any], name: str):
        id_file = out_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else _new_run_id()
        id_file.write_text(run_id + "\n")
        super().__init__(logger_cfg, out_dir, name, config, job_type="train", run_id=run_id)
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
        # The latest values W&B holds: a resumed online run's summary comes from the server; a new offline dir
        # holds none.
        self.held = {key: self.run.summary.get(key) for key in self.run.summary.keys()}
        if self.mode == "offline":
            drop_earlier_offline_dirs(out_dir / "wandb", run_id, self.run_dir)

    def holds(self, metrics: dict[str, float]) -> bool:
        return already_logged(metrics, self.held)


def already_logged(metrics: dict[str, float], held: dict[str, Any]) -> bool:
    """Whether a W&B run whose latest values are `held` has this log entry: one from before its last step, or one
    from its last step whose values are all the latest (a kill can lose the eval entry that follows a loss entry)."""
    last, step = held.get(STEP_KEY), metrics[STEP_KEY]
    if last is None or step > last:
        return False
    return step < last or all(held.get(key) == value for key, value in metrics.items())


def drop_earlier_offline_dirs(wandb_dir: Path, run_id: str, current: Path | None) -> None:
    """Remove the offline dirs of this run's earlier attempts: the resumed run logs their history again, and
    `wandb sync` of several dirs with one id would upload overlapping histories."""
    for old in wandb_dir.glob(f"offline-run-*-{run_id}"):
        if current is None or old.resolve() != current.resolve():
            shutil.rmtree(old)


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


# --------------------------------------------------------------------------------------------------
# Lineage


def generation_run(path: str | Path) -> RunDir | None:
    """The generation run dir a data path is, or whose dataset/ it is; None for any other dataset dir."""
    p = Path(path).expanduser().resolve()
    for root in (p, p.parent):
        run = RunDir(root)
        if run.shards.is_dir() and (root == p or run.dataset == p):
            return run
    return None


def source_manifest(path: str | Path) -> dict:
    """The content manifest of one data source, as its producer logged it."""
    run = generation_run(path)
    return dataset_manifest(run.root) if run is not None else hf_dataset_manifest(dataset_dir(path))


def _generation_tools(path: str | Path) -> int | None:
    run = generation_run(path)
    if run is None or not run.config.exists():
        return None
    value = (yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}).get("tools_per_dialogue")
    return value if isinstance(value, int) else None


def tools_per_dialogue(paths: Sequence[str]) -> int | None:
    """The tools listed per dialogue in every source (0: all of the domain's), None when the sources disagree or
    one is not a generation run dir."""
    values = {_generation_tools(p) for p in paths}
    return values.pop() if len(values) == 1 else None


def training_lineage(paths: Sequence[str], manifests: Sequence[dict], base_model: str, method: str,
                     out_dir: Path) -> dict[str, Any]:
    """What `toolturn_lineage.json` holds: the tool offer of the data, the base model, the method and the sources."""
    return {"tools_per_dialogue": tools_per_dialogue(paths), "base_model": base_model, "method": method,
            "datasets": [{"path": str(Path(p).expanduser().resolve()), **m} for p, m in zip(paths, manifests)],
            "train_out_dir": str(Path(out_dir).resolve())}


def write_lineage(model_dir: Path, lineage: dict[str, Any]) -> None:
    atomic_write_json(model_dir / LINEAGE_FILE, lineage)


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
