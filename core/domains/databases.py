"""The registry's database sources: a bring-your-own SQLite file (`kind: sqlite`) and τ²-bench's
databases converted to SQLite (`kind: tau2`, docs/tau2-domains.md). Neither has service tasks: their
tasks are the schema's (core/tasks/programmatic.py) under the generic policy, τ²'s with its own text."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.policy import GENERIC
from toolturn.core.sqlenv import SIDE_FILES, load_into_memory
from toolturn.core.sqlschema import slugify

from .contract import Source


def sqlite_source(cfg, seed: int) -> Source:
    if not cfg.get("path"):
        raise ToolturnError("domain=sqlite needs domain.path=FILE (a SQLite database)")
    source = Path(cfg.path).expanduser().resolve()
    return Source(name=cfg.get("name") or slugify(source.stem) or "sqlite",
                  description=cfg.get("description") or f"the '{source.stem}' database",
                  identity={"kind": "sqlite", **_file_identity(source)}, shown=cfg.path,
                  build=lambda tmp: _copy_database(source, tmp))


def tau2_source(cfg, seed: int) -> Source:
    from . import tau2_db  # the converter (~700 lines of schema inference) is loaded only for τ² domains

    files = tau2_db.locate(str(cfg.get("source") or ""), cfg.get("data_dir"), cfg.get("policy_files"))
    name = cfg.get("name") or f"tau2_{files.source.domain}"
    return Source(name=name, description=cfg.get("description") or tau2_db.description(files),
                  # the package's policy text, then the generic rules the policy checker enforces (core/policy.py)
                  rules=replace(GENERIC, name=name, preamble=tau2_db.policy_preamble(files)),
                  identity=files.identity(), shown=str(files.db_path), extra_files=(tau2_db.REPORT,),
                  build=lambda tmp: tau2_db.convert(files, tmp, tmp.parent / tau2_db.REPORT))


def _file_identity(path: Path) -> dict:
    """What identifies a source file cheaply: path, size and modification time, also of its side files."""
    if not path.is_file():
        raise ToolturnError(f"database file not found: {path}")
    files = [path] + [Path(f"{path}{s}") for s in SIDE_FILES if Path(f"{path}{s}").is_file()]
    return {"path": str(path), "files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}


def _copy_database(source: Path, dest: Path) -> None:
    """Copy through the backup API from a read-only handle: the pristine file is never modified."""
    if not source.is_file():
        raise ToolturnError(f"database file not found: {source}")
    mem = load_into_memory(source)  # raises a ToolturnError for a corrupt file
    try:
        target = sqlite3.connect(dest)
        mem.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")  # a WAL source's copy must not grow -wal files of its own
        target.close()
    finally:
        mem.close()
