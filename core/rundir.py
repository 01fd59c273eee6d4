"""The run-dir format of the generation stage: every path in it, the record's content digest, and
reading records back.

Writers (the generator, the shard writer, domain set-up, export) take their paths from `RunDir`;
readers (audit, stats, export, training) import only this module and the JSONL helpers, nothing
that loads roles, LLM clients, servers or torch.

    config.yaml  stats.json  README.md  plots/  sessions.jsonl  logs/  .hydra_runs/
    wandb/  wandb_run_id            the W&B run (logger=wandb) and its id, kept for resume
    domains/<name>/  db.sqlite (pristine) schema.sql tools.json domain.json skipped.json ...
    shards/part-<worker>-<n>.jsonl  one record per kept dialogue
    shards/log-<worker>.jsonl       one line per finished index: kept, or the drop reason
    dataset/                        HF datasets built from the shards
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml
from toolturn.core.errors import ToolturnError
from toolturn.core.files import WaitedLock, exclusive_lock, read_jsonl

RECORD_KEYS = ("id", "messages", "tools", "meta")  # a record; meta holds index, domain, digest, ...
LOG_KEYS = ("index", "drop_reason")  # a shard log line


def record_digest(messages: list[dict], tools: list[dict]) -> str:
    """Content hash stored in meta.digest; the audit recomputes it to catch hand edits."""
    blob = json.dumps({"messages": messages, "tools": tools}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        """A run dir that must already hold shards (one-line error otherwise)."""
        run = cls(Path(path))
        if not run.shards.is_dir():
            raise ToolturnError(f"{path} is not a generation run dir (no shards/)")
        return run

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def sessions(self) -> Path:
        return self.root / "sessions.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def wandb_run_id(self) -> Path:
        return self.root / "wandb_run_id"

    @property
    def domains(self) -> Path:
        return self.root / "domains"

    def domain(self, name: str) -> Path:
        return self.domains / name

    def lock(self, name: str) -> Path:
        return self.root / f".{name}.lock"

    def writer_lock(self, worker: int):
        """Held by the one process that runs this worker, for its whole run (the shard writer also locks the
        worker's shard log, which a removed lock file cannot defeat)."""
        return exclusive_lock(self.lock(f"worker-{worker:04d}"), f"worker {worker} of {self.root}")

    def setup_lock(self) -> WaitedLock:
        """Held while the domain is set up: workers starting together (one machine or a shared filesystem
        with flock) set it up once, the others wait and then reuse it."""
        return WaitedLock(self.lock("domains"))

    def export_lock(self) -> WaitedLock:
        """Held while the run is exported: array tasks may complete it at the same moment."""
        return WaitedLock(self.lock("export"))

    def part_file(self, worker: int, n: int) -> Path:
        return self.shards / f"part-{worker:04d}-{n:05d}.jsonl"

    def log_file(self, worker: int) -> Path:
        return self.shards / f"log-{worker:04d}.jsonl"

    def part_files(self, worker: int | None = None) -> list[Path]:
        pattern = f"part-{worker:04d}-*.jsonl" if worker is not None else "part-*.jsonl"
        return sorted(self.shards.glob(pattern))

    def log_files(self) -> list[Path]:
        return sorted(self.shards.glob("log-*.jsonl"))

    @staticmethod
    def read_part(path: Path) -> Iterator[dict]:
        return read_jsonl(path, RECORD_KEYS, "record")

    @staticmethod
    def read_log(path: Path) -> Iterator[dict]:
        return read_jsonl(path, LOG_KEYS, "shard log line")

    def iter_records(self) -> Iterator[dict]:
        for path in self.part_files():
            yield from self.read_part(path)

    def records(self) -> list[dict]:
        """Every kept record, in dialogue-index order."""
        return sorted(self.iter_records(), key=lambda r: r["meta"]["index"])

    def count_records(self) -> int:
        """Committed records (finished lines), without parsing them."""
        n = 0
        for path in self.part_files():
            with open(path, "rb") as f:
                n += sum(1 for line in f if line.endswith(b"\n") and line.strip())
        return n

    def log_rows(self) -> Iterator[dict]:
        for path in self.log_files():
            yield from self.read_log(path)

    def workers(self) -> int | None:
        """`workers` of the run's config.yaml (None without one)."""
        if not self.config.exists():
            return None
        try:
            value = (yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}).get("workers")
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as exc:
            raise ToolturnError(f"{self.config}: not a generation config ({type(exc).__name__})") from None
        return value if isinstance(value, int) and value >= 1 else None

    def session_rows(self) -> list[dict]:
        return list(read_jsonl(self.sessions, ("wall_s", "produced"), "session")) if self.sessions.exists() else []
