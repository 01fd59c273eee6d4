"""Domain sources: built-in customer-service databases and import of any SQLite file.

`prepare_domain` materialises a domain into `<run_dir>/domains/<name>/` (db.sqlite is the pristine
initial state; schema.sql, tools.json and skipped.json describe it) and returns a `Domain`.
"""

from __future__ import annotations

import importlib
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.sqlenv import SqlDomain, SqlTool, load_into_memory
from toolturn.core.sqlschema import Schema, introspect, slugify
from toolturn.core.tools.schema_tools import derive_tools

log = logging.getLogger(__name__)

BUILTIN = ("retail", "airline", "telecom")
GENERIC_POLICY = (
    "You are a customer-service assistant with access to the organisation's database through tools.\n"
    "- Use the tools to look up facts; never guess values.\n"
    "- Ask the user for any identifier you need instead of inventing one.\n"
    "- Make changes only when the user asks for them, and report the stored result.\n"
    "- If a tool returns an error, say so plainly and suggest a next step.")


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

    def add_tools(self, extra: list[SqlTool]) -> None:
        """Admit more executable tools (e.g. validated LLM-written SQL)."""
        self.tools = self.tools + extra
        self.toolset = [t.openai_schema() for t in self.tools]
        if self.env is not None:
            self.env.tools.update({t.name: t for t in extra})


def _builtin_module(name: str):
    return importlib.import_module(f"toolturn.core.domains.{name}")


def prepare_domain(cfg, run_dir: Path, seed: int) -> Domain:
    """cfg: the `domain` config group ({kind: builtin, name} or {kind: sqlite, path, name?})."""
    kind = cfg.get("kind")
    if kind == "builtin":
        if cfg.name not in BUILTIN:
            raise ToolturnError(f"unknown built-in domain '{cfg.name}'; choose one of {list(BUILTIN)} "
                                f"or domain=sqlite domain.path=FILE")
        name, module = cfg.name, _builtin_module(cfg.name)
        description, policy = module.DESCRIPTION, module.POLICY
    elif kind == "sqlite":
        if not cfg.get("path"):
            raise ToolturnError("domain=sqlite needs domain.path=FILE (a SQLite database)")
        source = Path(cfg.path).expanduser().resolve()
        name = cfg.get("name") or slugify(source.stem) or "sqlite"
        description = cfg.get("description") or f"the '{source.stem}' database"
        policy, module = GENERIC_POLICY, None
    else:
        raise ToolturnError(f"unknown domain kind '{kind}' (expected builtin or sqlite)")

    out = run_dir / "domains" / name
    db_path = out / "db.sqlite"
    if not db_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = db_path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        if module is not None:
            module.build(tmp, seed)
        else:
            _copy_database(source, tmp)
        tmp.rename(db_path)  # atomic: a killed run never leaves a half-built pristine copy

    mem = load_into_memory(db_path)
    try:
        schema = introspect(mem)
        if not any(t.columns for t in schema.tables.values()):
            reasons = "; ".join(f"{k}: {v}" for k, v in schema.skipped.items()) or "the database has no tables"
            raise ToolturnError(f"no usable table in {db_path.name if module else cfg.path} ({reasons})")
        tools, skipped_tools = derive_tools(mem, schema)
        ddl = [r[0] + ";" for r in mem.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type, name")]
    finally:
        mem.close()
    skipped = {**schema.skipped, **skipped_tools}
    for what, why in skipped.items():
        log.info("domain %s: skipped %s: %s", name, what, why)
    schema_sql = "\n".join(ddl) + "\n"
    (out / "schema.sql").write_text(schema_sql)
    (out / "tools.json").write_text(json.dumps([t.to_dict() for t in tools], indent=1, ensure_ascii=False))
    (out / "skipped.json").write_text(json.dumps(skipped, indent=1, ensure_ascii=False))
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
        target.close()
    finally:
        mem.close()
