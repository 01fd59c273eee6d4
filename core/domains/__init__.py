"""Domain sources: built-in customer-service databases, import of any SQLite file, and τ²-bench's
databases converted to SQLite (`tau2_db.py`, docs/tau2-domains.md).

`prepare_domain` materialises a domain into `<run_dir>/domains/<name>/` (db.sqlite is the pristine
initial state, source.json what it was made from; schema.sql, tools.json and skipped.json describe it)
and returns a `Domain`. A source file is only read: nothing is written beside it (see `load_into_memory`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, atomic_write_json
from toolturn.core.policy import GENERIC, Policy
from toolturn.core.sqlenv import SIDE_FILES, SqlDomain, SqlTool, load_into_memory
from toolturn.core.sqlschema import Schema, introspect, slugify
from toolturn.core.tools.schema_tools import derive_tools

from . import tau2_db

log = logging.getLogger(__name__)

BUILTIN = ("retail", "airline", "telecom")
GENERIC_POLICY = GENERIC.text()  # the policy of a database without one of its own (core/policy.py)


@dataclass
class Domain:
    name: str
    description: str
    policy: str
    toolset: list[dict]  # OpenAI function schemas offered to the assistant
    db_path: Path | None = None  # None for a tools-only (simulated) domain
    schema: Schema | None = None
    schema_sql: str = ""
    tools: list[SqlTool] = field(default_factory=list)  # executable tools
    skipped: dict[str, str] = field(default_factory=dict)
    env: SqlDomain | None = None
    return_schemas: dict[str, dict] = field(default_factory=dict)  # for tools=simulated
    rules: Policy = GENERIC  # the policy as data: `policy` is its text (core/policy.py)
    # refusal reason id -> the values every rule-based task refusing with it fills into the reason's {placeholders}
    refusal_slots: dict[str, frozenset[str]] = field(default_factory=dict)

    def add_tools(self, extra: list[SqlTool]) -> None:
        """Admit more executable tools (e.g. validated LLM-written SQL)."""
        self.tools = self.tools + extra
        self.toolset = [t.openai_schema() for t in self.tools]
        if self.env is not None:
            self.env.tools.update({t.name: t for t in extra})


def _builtin_module(name: str):
    return importlib.import_module(f"toolturn.core.domains.{name}")


def prepare_domain(cfg, run_dir: Path, seed: int) -> Domain:
    """cfg: the `domain` config group ({kind: builtin, name}, {kind: sqlite, path, name?} or
    {kind: tau2, source, name?, policy_files?, data_dir?})."""
    kind = cfg.get("kind")
    rules, actions, shown = GENERIC, [], None
    if kind == "builtin":
        if cfg.name not in BUILTIN:
            raise ToolturnError(f"unknown built-in domain '{cfg.name}'; choose one of {list(BUILTIN)} "
                                f"or domain=sqlite domain.path=FILE")
        name, module = cfg.name, _builtin_module(cfg.name)
        rules, actions, description = module.POLICY, module.ACTIONS, module.DESCRIPTION
        identity = {"kind": "builtin", "name": name, "seed": seed}
        build = lambda tmp: module.build(tmp, seed)
    elif kind == "sqlite":
        if not cfg.get("path"):
            raise ToolturnError("domain=sqlite needs domain.path=FILE (a SQLite database)")
        source = Path(cfg.path).expanduser().resolve()
        name = cfg.get("name") or slugify(source.stem) or "sqlite"
        description = cfg.get("description") or f"the '{source.stem}' database"
        identity, shown = {"kind": "sqlite", **_file_identity(source)}, cfg.path
        build = lambda tmp: _copy_database(source, tmp)
    elif kind == "tau2":
        files = tau2_db.locate(str(cfg.get("source") or ""), cfg.get("data_dir"), cfg.get("policy_files"))
        name = cfg.get("name") or f"tau2_{files.source.domain}"
        description = cfg.get("description") or tau2_db.description(files)
        # the package's policy text, then the generic rules the policy checker enforces (core/policy.py)
        rules = replace(GENERIC, name=name, preamble=tau2_db.policy_preamble(files))
        identity, shown = files.identity(), str(files.db_path)
        build = lambda tmp: tau2_db.convert(files, tmp, tmp.parent / tau2_db.REPORT)
    else:
        raise ToolturnError(f"unknown domain kind '{kind}' (expected builtin, sqlite or tau2)")

    out = run_dir / "domains" / name
    db_path = out / "db.sqlite"
    built = _reuse_or_build(db_path, identity, build)
    try:
        domain = _load_domain(name, description, rules.text(), db_path, shown or db_path.name, actions)
        domain.rules = rules
        if kind == "builtin":
            domain.refusal_slots = _refusal_slots(module.SERVICE, domain.env)
        return domain
    except BaseException:
        if built:  # a later run must not reuse what this failed set-up made
            for f in (db_path, _identity_path(db_path), *(out / n for n in DESCRIPTION_FILES)):
                f.unlink(missing_ok=True)
        raise


DESCRIPTION_FILES = ("schema.sql", "tools.json", "skipped.json", tau2_db.REPORT)


def _refusal_slots(service, env: SqlDomain) -> dict[str, frozenset[str]]:
    """reason id -> the columns of every refusal scenario's pick row that gives it (what its text may name)."""
    slots: dict[str, frozenset[str]] = {}
    sandbox = env.open_sandbox()
    try:
        for scenario in service.scenarios:
            columns = frozenset(d[0] for d in sandbox.conn.execute(
                f"SELECT * FROM ({scenario.pick}) LIMIT 0", {"email": None}).description)
            for part in scenario.parts:
                if part.refusal:
                    slots[part.refusal] = slots.get(part.refusal, columns) & columns
    finally:
        sandbox.close()
    return slots


def _identity_path(db_path: Path) -> Path:
    return db_path.with_name("source.json")


def _file_identity(path: Path) -> dict:
    """What identifies a source file cheaply: path, size and modification time, also of its side files."""
    if not path.is_file():
        raise ToolturnError(f"database file not found: {path}")
    files = [path] + [Path(f"{path}{s}") for s in SIDE_FILES if Path(f"{path}{s}").is_file()]
    return {"path": str(path), "files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}


def _reuse_or_build(db_path: Path, identity: dict, build) -> bool:
    """Reuse the pristine copy only if it was made from this very source; build it otherwise. Returns
    whether it was built now. A copy without a recorded source (a set-up killed after the copy, or a
    run dir from before sources were recorded) is rebuilt."""
    marker = _identity_path(db_path)
    if db_path.exists() and marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded == identity:
            return False
        raise ToolturnError(f"{db_path} was made from a different source ({_differs(recorded, identity)}); "
                            f"use another out_dir, or delete {db_path.parent} to rebuild the domain")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this build alone: a racing builder (a set-up lock the filesystem does not honour) never
    # deletes or publishes another's half-built file, and every build of one source is the same database
    tmp = db_path.with_name(f".{db_path.name}.build-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        build(tmp)
        os.replace(tmp, db_path)  # atomic: a killed run never leaves a half-built pristine copy
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_json(marker, identity)
    return True


def _differs(recorded: dict, current: dict) -> str:
    if recorded.get("kind") != current.get("kind") or recorded.get("path") != current.get("path"):
        return f"recorded {recorded.get('path') or recorded.get('name')}, now {current.get('path') or current.get('name')}"
    if current["kind"] == "builtin":
        return f"recorded seed {recorded.get('seed')}, now {current['seed']}"
    if current["kind"] == "tau2":
        changed = sorted(k for k in ("domain", "version", "files", "converter") if recorded.get(k) != current.get(k))
        return f"the τ² {current['domain']} source differs in {', '.join(changed)}"
    return f"{current['path']} changed size, modification time or -wal/-journal files since"


def _load_domain(name: str, description: str, policy: str, db_path: Path, shown: str,
                 actions: list[SqlTool] = ()) -> Domain:
    out = db_path.parent
    mem = load_into_memory(db_path)
    try:
        schema = introspect(mem)
        if not any(t.columns for t in schema.tables.values()):
            reasons = "; ".join(f"{k}: {v}" for k, v in schema.skipped.items()) or "the database has no tables"
            raise ToolturnError(f"no usable table in {shown} ({reasons})")
        tools, skipped_tools = derive_tools(mem, schema)
        tools += actions  # the domain's service actions (core/domains/actions.py)
        hidden = {k for k, why in schema.skipped.items() if why.startswith(("virtual table", "shadow table"))}
        ddl = [sql + ";" for kind, obj, table, sql in mem.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name") if obj not in hidden and table not in hidden]
    finally:
        mem.close()
    skipped = {**schema.skipped, **skipped_tools}
    for what, why in skipped.items():
        log.info("domain %s: skipped %s: %s", name, what, why)
    schema_sql = "\n".join(ddl) + "\n"
    atomic_write(out / "schema.sql", schema_sql)
    atomic_write_json(out / "tools.json", [t.to_dict() for t in tools])
    atomic_write_json(out / "skipped.json", skipped)
    fk_usable = not any(".fk->" in k for k in schema.skipped)
    env = SqlDomain(db_path, tools, list(schema.tables), enforce_foreign_keys=fk_usable)
    return Domain(name=name, description=description, policy=policy, toolset=[t.openai_schema() for t in tools],
                  db_path=db_path, schema=schema, schema_sql=schema_sql, tools=tools, skipped=skipped, env=env)


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
