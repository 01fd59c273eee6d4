"""Domains: built-in customer-service databases (one folder each: retail/, airline/, telecom/), import of
any SQLite file, and τ²-bench's databases converted to SQLite (`tau2_db.py`, docs/tau2-domains.md), all
named in one registry (`registry.py`, the contracts in `contract.py`).

`prepare_domain` materialises a domain into `<run_dir>/domains/<name>/` (db.sqlite is the pristine
initial state, source.json what it was made from; schema.sql, tools.json and skipped.json describe it)
and returns a `Domain`. A source file is only read: nothing is written beside it (see `load_into_memory`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, atomic_write_json
from toolturn.core.policy import GENERIC, Policy
from toolturn.core.sqlenv import SqlDomain, SqlTool, load_into_memory
from toolturn.core.sqlschema import Schema, introspect
from toolturn.core.tools.schema_tools import derive_tools

from .registry import REGISTRY

log = logging.getLogger(__name__)

BUILTIN = REGISTRY.names()
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


def prepare_domain(cfg, run_dir: Path, seed: int) -> Domain:
    """cfg: the `domain` config group, resolved through the registry (core/domains/registry.py)."""
    source = REGISTRY.resolve(cfg, seed)
    out = run_dir / "domains" / source.name
    db_path = out / "db.sqlite"
    built = _reuse_or_build(db_path, source.identity, source.build)
    try:
        domain = _load_domain(source.name, source.description, source.rules.text(), db_path,
                              source.shown or db_path.name, list(source.actions))
        domain.rules = source.rules
        if source.service is not None:
            domain.refusal_slots = _refusal_slots(source.service, domain.env)
        return domain
    except BaseException:
        if built:  # a later run must not reuse what this failed set-up made
            for f in (db_path, _identity_path(db_path), *(out / n for n in (*DESCRIPTION_FILES, *source.extra_files))):
                f.unlink(missing_ok=True)
        raise


DESCRIPTION_FILES = ("schema.sql", "tools.json", "skipped.json")


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
