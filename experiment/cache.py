"""Stage caching: a stage is skipped when its command and the content of its inputs are what they were
when it last finished, and its own output is still what it wrote.

    fingerprint(stage) = sha256(command line, the recorded output digest of every upstream stage)
    output digest      = the content of what the stage made: the dataset's records (core/lineage.py), the
                         trained model's weights, the evaluation's metrics.json

`OUT/.stages/<stage>.json` records a finished stage (fingerprint, output digest, time); `.started.json`
the fingerprint a stage was started with. A stage started with the same fingerprint and killed resumes in
place (every stage resumes on its own); one whose fingerprint changed starts afresh in an emptied dir,
because its old outputs answer another question. A changed upstream output changes the fingerprints of
exactly the stages downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write_json
from toolturn.core.lineage import dataset_manifest, hf_dataset_manifest, model_identity
from toolturn.core.snapshot import code_version  # noqa: F401 - report.py reads it from here too
from toolturn.experiment.plan import Stage


@dataclass(frozen=True)
class Decision:
    run: bool
    why: str
    fresh: bool = False  # empty the stage's dir first


def output_digest(stage: Stage) -> str:
    """The content hash of what `stage` made (a one-line error when it is missing)."""
    out = stage.out_dir
    if stage.kind in ("generate", "audit"):
        return dataset_manifest(out)["sha256"]
    if stage.kind == "convert":
        return hf_dataset_manifest(out)["sha256"]
    if stage.kind == "train":
        if not (out / "merged" / "config.json").exists():
            raise ToolturnError(f"{stage.name} finished without a model in {out / 'merged'}")
        return model_identity(out / "merged")["sha256"]
    path = out / ("metrics.json" if stage.kind == "evaluate" else "report.md")
    if not path.exists():
        raise ToolturnError(f"{stage.name} finished without {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


class StageCache:
    def __init__(self, root: Path):
        self.dir = root / ".stages"

    def _path(self, stage: Stage, suffix: str = "") -> Path:
        return self.dir / f"{stage.name.replace(':', '--')}{suffix}.json"

    def record(self, stage: Stage) -> dict | None:
        path = self._path(stage)
        return json.loads(path.read_text()) if path.exists() else None

    def output_of(self, name: str, stages: dict[str, Stage]) -> str:
        record = self.record(stages[name])
        if record is None:
            raise ToolturnError(f"stage {name} has not run yet; run it first (toolturn-run without stage=, or "
                                f"stage={stages[name].group})")
        return record["output"]

    def fingerprint(self, stage: Stage, stages: dict[str, Stage]) -> str:
        inputs = {name: self.output_of(name, stages) for name in stage.needs}
        blob = json.dumps({"command": stage.command(), "inputs": inputs}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def decide(self, stage: Stage, fingerprint: str, force: bool = False) -> Decision:
        if force:
            return Decision(True, "rerun= asks for it: starting afresh", fresh=True)
        done = self.record(stage)
        if done is not None and done["fingerprint"] == fingerprint:
            try:
                if output_digest(stage) == done["output"]:
                    return Decision(False, f"unchanged since {done['finished']} (same command and inputs)")
                return Decision(True, "its output was changed after it finished: making it again", fresh=True)
            except (ToolturnError, OSError, ValueError):
                return Decision(True, "its output is gone: making it again", fresh=True)
        started = self._path(stage, ".started")
        if started.exists() and json.loads(started.read_text())["fingerprint"] == fingerprint:
            return Decision(True, "resuming an unfinished run")
        if done is not None or started.exists():
            return Decision(True, "its command or inputs changed: starting afresh", fresh=True)
        return Decision(True, "new")

    def start(self, stage: Stage, fingerprint: str, fresh: bool) -> None:
        if fresh and stage.out_dir.exists() and stage.kind != "audit":  # audit reads generate's dir
            shutil.rmtree(stage.out_dir)
        self._path(stage).unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self._path(stage, ".started"), {"fingerprint": fingerprint, "started": _now()})

    def finish(self, stage: Stage, fingerprint: str, elapsed_s: float) -> str:
        digest = output_digest(stage)
        atomic_write_json(self._path(stage), {"fingerprint": fingerprint, "output": digest, "finished": _now(),
                                              "elapsed_s": round(elapsed_s, 1), "command": stage.command(),
                                              "commit": code_version()})
        self._path(stage, ".started").unlink(missing_ok=True)
        return digest


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
