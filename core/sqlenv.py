"""The SQL environment: schema-derived tools executed in a per-dialogue sandbox (DESIGN section 4).

Every dialogue gets its own in-memory copy of the domain database (SQLite backup API), so its writes
persist across turns and never leak into another dialogue. Arguments are type-checked against the
tool's JSON Schema and always bound, never formatted into SQL. An authorizer denies anything outside
the domain's tables (ATTACH, PRAGMA, DDL, load_extension, sqlite_master) and denies writes to read
tools; a progress handler bounds each call's run time. Errors come back as `{"error": ...}` content.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from toolturn.core.errors import ToolCallError, ToolturnError
from toolturn.core.sqlschema import quote_ident

MAX_STRING_CHARS = 1000
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


@dataclass(frozen=True)
class SqlTool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments
    sql: str  # one statement with named :binds
    effect: str  # "read" | "write"
    returns: str  # "row": one object (error when nothing matches) | "rows": a list of objects
    table: str  # the table the tool is about

    def openai_schema(self) -> dict:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SqlTool":
        return cls(**d)


@dataclass(frozen=True)
class ToolResult:
    content: str  # what goes into the tool message, byte-for-byte reproducible
    ok: bool
    value: Any  # the decoded result (None on error)


def dump_json(value: Any) -> str:
    """The one serialization of tool results; the audit compares its output byte for byte."""
    return json.dumps(value, ensure_ascii=False)


def _json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v


def check_arguments(tool: SqlTool, args: Any) -> dict[str, Any]:
    """Validate `args` against the tool's schema; return the complete bind dict (absent -> default/NULL)."""
    return check_parameters(tool.name, tool.parameters, args)


def check_parameters(tool: str, parameters: dict, args: Any) -> dict[str, Any]:
    """The argument check shared by executed and simulated tools (JSON-Schema subset: types, enums,
    ranges, required, no unknown keys, bounded strings)."""
    if not isinstance(args, dict):
        raise ToolCallError(f"arguments for {tool} must be a JSON object, got {type(args).__name__}")
    props: dict = parameters.get("properties", {})
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise ToolCallError(f"unknown argument(s) {unknown} for {tool}; expected a subset of {sorted(props)}")
    missing = [p for p in parameters.get("required", []) if args.get(p) is None]
    if missing:
        raise ToolCallError(f"missing required argument(s) {missing} for {tool}")
    binds = {}
    for name, spec in props.items():
        value = args.get(name, spec.get("default"))
        if value is not None:
            _check_value(tool, name, spec, value)
        binds[name] = value
    return binds


def _check_value(tool: str, name: str, spec: dict, value: Any) -> None:
    kind = spec.get("type")
    ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "string": isinstance(value, str),
          "boolean": isinstance(value, bool)}.get(kind, True)
    if not ok:
        raise ToolCallError(f"argument '{name}' of {tool} must be of type {kind}, got {type(value).__name__} "
                            f"{json.dumps(value)[:40]}")
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise ToolCallError(f"argument '{name}' of {tool} is too long ({len(value)} characters, "
                            f"at most {MAX_STRING_CHARS})")
    if "enum" in spec and value not in spec["enum"]:
        raise ToolCallError(f"argument '{name}' of {tool} must be one of {spec['enum']}, got {value!r}")
    if "minimum" in spec and value < spec["minimum"] or "maximum" in spec and value > spec["maximum"]:
        raise ToolCallError(f"argument '{name}' of {tool} must be between {spec.get('minimum')} and "
                            f"{spec.get('maximum')}, got {value}")


def table_hash(conn: sqlite3.Connection, table: str) -> str:
    h = hashlib.sha256(table.encode())
    for row in sorted(repr(row) for row in conn.execute(f"SELECT * FROM {quote_ident(table)}")):
        h.update(row.encode())
    return h.hexdigest()


class SqlDomain:
    """A domain database loaded once into memory, plus its tools. Opens isolated sandboxes."""

    def __init__(self, db_path: Path, tools: list[SqlTool], tables: list[str], enforce_foreign_keys: bool = True,
                 time_limit_s: float = 2.0):
        self.db_path = Path(db_path)
        self.tools = {t.name: t for t in tools}
        self.tables = sorted(tables)
        self.enforce_foreign_keys = enforce_foreign_keys
        self.time_limit_s = time_limit_s
        self._master = load_into_memory(self.db_path)
        # Schema objects tools may not read (views, other tables); CTE names are not among them.
        self.forbidden = frozenset(r[0] for r in self._master.execute("SELECT name FROM sqlite_master")) \
            - set(self.tables)
        self.has_triggers = bool(self._master.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger'").fetchone())
        self.dependents = self._dependents()
        self._pristine: dict[str, str] = {}

    def _dependents(self) -> dict[str, set[str]]:
        """table -> tables a write to it can change through foreign-key actions (children, transitively)."""
        children: dict[str, set[str]] = {t: set() for t in self.tables}
        for t in self.tables:
            for row in self._master.execute("SELECT \"table\" FROM pragma_foreign_key_list(?)", (t,)):
                children.setdefault(row[0], set()).add(t)
        closure = {}
        for t in self.tables:
            seen, todo = {t}, [t]
            while todo:
                for child in children.get(todo.pop(), ()):
                    if child not in seen:
                        seen.add(child)
                        todo.append(child)
            closure[t] = seen
        return closure

    def pristine_table_hash(self, table: str) -> str:
        if table not in self._pristine:
            self._pristine[table] = table_hash(self._master, table)
        return self._pristine[table]

    def open_sandbox(self) -> "Sandbox":
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._master.backup(conn)
        return Sandbox(conn, self)

    def openai_tools(self) -> list[dict]:
        return [t.openai_schema() for t in self.tools.values()]

    def close(self) -> None:
        self._master.close()


def load_into_memory(db_path: Path) -> sqlite3.Connection:
    """Copy a database file into memory, opening the file read-only so it can never be modified."""
    if not db_path.is_file():
        raise ToolturnError(f"database file not found: {db_path}")
    try:
        src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            mem = sqlite3.connect(":memory:", check_same_thread=False)
            src.backup(mem)
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise ToolturnError(f"cannot read SQLite database {db_path}: {exc}") from None
    return mem


class Sandbox:
    """One dialogue's private database. `call` never raises for a bad call: it returns an error result."""

    def __init__(self, conn: sqlite3.Connection, domain: SqlDomain):
        self.conn = conn
        self.domain = domain
        self._allowed = frozenset(domain.tables)
        self._writable = False
        self._deadline = float("inf")  # only tool calls are time-bounded
        self.dirty: set[str] = set()  # tables a write may have changed (see state_hash)
        if domain.enforce_foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._over_time, 1000)

    def _authorize(self, action: int, arg1, arg2, _db, _source) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT,
                      sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            hidden = arg1 in self.domain.forbidden or (arg1 or "").lower().startswith("sqlite_")
            return sqlite3.SQLITE_DENY if hidden else sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
            if self._writable and arg1 in self._allowed:
                self.dirty |= self.domain.dependents.get(arg1, {arg1})
                return sqlite3.SQLITE_OK
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_DENY  # ATTACH, DETACH, PRAGMA, CREATE/DROP/ALTER, ANALYZE, ...

    def _over_time(self) -> int:
        return 1 if time.perf_counter() > self._deadline else 0

    def call(self, name: str, arguments: Any) -> ToolResult:
        tool = self.domain.tools.get(name)
        if tool is None:
            error = f"unknown tool '{name}'; available tools: {sorted(self.domain.tools)}"
            return ToolResult(dump_json({"error": error}), ok=False, value=None)
        return self.run(tool, arguments)

    def run(self, tool: SqlTool, arguments: Any) -> ToolResult:
        """Execute any tool (also one not registered with the domain, e.g. a candidate being checked)."""
        try:
            value = self._execute(tool, arguments)
        except ToolCallError as exc:
            return ToolResult(dump_json({"error": str(exc)}), ok=False, value=None)
        return ToolResult(dump_json(value), ok=True, value=value)

    def _execute(self, tool: SqlTool, arguments: Any) -> Any:
        binds = check_arguments(tool, arguments)
        self._writable = tool.effect == "write"
        self._deadline = time.perf_counter() + self.domain.time_limit_s
        self.conn.execute("SAVEPOINT tool_call")
        try:
            cur = self.conn.execute(tool.sql, binds)
            names = [d[0] for d in cur.description or ()]
            rows = [{k: _json_value(v) for k, v in zip(names, row)} for row in cur.fetchall()]
        except sqlite3.Error as exc:
            self.conn.execute("ROLLBACK TO tool_call")
            self.conn.execute("RELEASE tool_call")
            raise ToolCallError(self._describe(exc)) from None
        finally:
            self._writable, self._deadline = False, float("inf")
        self.conn.execute("RELEASE tool_call")
        if cur.description is None:  # a write without RETURNING
            return {"changed_rows": cur.rowcount}
        if tool.returns == "rows":
            return rows
        if not rows:
            shown = {k: v for k, v in binds.items() if v is not None}
            raise ToolCallError(f"no {tool.table} record found for {dump_json(shown)}")
        return rows[0]

    def _describe(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if text == "interrupted":
            return f"query exceeded the time limit of {self.domain.time_limit_s:g} s"
        if "not authorized" in text or "prohibited" in text:
            return f"operation not permitted: {text}"
        return f"database error: {text}"

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Run several calls as one unit: if the block raises, every write in it is rolled back."""
        self.conn.execute("SAVEPOINT attempt")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO attempt")
            raise
        finally:
            self.conn.execute("RELEASE attempt")

    def state_hash(self) -> str:
        """Digest of every domain table's contents, independent of physical row order. Tables no
        write could have reached reuse the domain's cached pristine digests (triggers disable this)."""
        h = hashlib.sha256()
        for table in self.domain.tables:
            fresh = self.domain.has_triggers or table in self.dirty
            h.update(table_hash(self.conn, table).encode() if fresh else self.domain.pristine_table_hash(table).encode())
        return h.hexdigest()

    def close(self) -> None:
        self.conn.close()
