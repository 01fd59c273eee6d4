"""The SQL environment: schema-derived tools executed in a per-dialogue sandbox (`docs/architecture.md` §6).

Every dialogue gets its own in-memory copy of the domain database (SQLite backup API), so its writes
persist across turns and never leak into another dialogue. Arguments are type-checked against the
tool's JSON Schema and always bound, never formatted into SQL. An authorizer denies anything outside
the domain's tables (ATTACH, PRAGMA, DDL, load_extension, sqlite_master) and denies writes to read
tools, and transaction control inside a tool; a progress handler bounds each call's run time (CPU
seconds of the call, so that a loaded machine gives the same results as an idle one), also inside one
long SQLite operation, and SQLite's own limits bound what one call may build: no value
longer than the result cap exists during a call. Reaching a cap is an error, never a silent NULL:
`printf` (and its alias `format`) is SQLite's own behind a check, because past the cap SQLite's
returns NULL, after a loop over the requested width that no progress handler interrupts. Callers in
an event loop first `try_call` on the loop's thread with a budget of `INLINE_BUDGET_S`; a call that needs
more is rolled back there and runs again in a worker thread (`core/episode.py`), so a call that runs up to
the time limit stalls only its own dialogue, while the usual call (well under a millisecond) costs no
thread handoffs. A result is JSON in UTF-8 with finite numbers, at
most `max_result_bytes` long; a larger one is a tool error naming the cap (not a truncated result:
a cut list would read as complete data). Errors come back as `{"error": ...}` content, and a failed
call is rolled back whatever went wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from toolturn.core.errors import ToolCallError, ToolturnError
from toolturn.core.sqlschema import quote_ident

MAX_STRING_CHARS = 1000
PRINTF_FUNCTIONS = ("printf", "format")  # one SQLite function under two names
# a printf conversion: flags, width, precision, length and type (`*`: the value comes from the next argument)
PRINTF_SPEC = re.compile(r"%[-+ 0#,!]*(\*|\d+)?(?:\.(\*|\d*))?(?:ll|l)?(.)", re.S)
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
MAX_RESULT_BYTES = 64 * 1024  # one tool result, as UTF-8 JSON
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # SQLite's INTEGER
TOOL_SQL_PREFIX = ("/* read tool */ ", "/* write tool */ ")
FETCH_ROWS = 64  # rows decoded at a time, so an oversized result stops early
# SQLite's own limits on every sandbox connection (defaults are 1e9 bytes, 500 terms, 1000 levels);
# SQLITE_LIMIT_LENGTH is lowered further to the result cap while a tool runs. A LIKE pattern costs up to
# its length times the value's in one step, so it is kept near the longest argument a tool may bind.
CONNECTION_LIMITS = {sqlite3.SQLITE_LIMIT_SQL_LENGTH: 1_000_000, sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 100,
                     sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200, sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 2 * MAX_STRING_CHARS,
                     sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 100, sqlite3.SQLITE_LIMIT_ATTACHED: 0,
                     sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 100}


@dataclass(frozen=True)
class SqlTool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments
    sql: str  # one statement with named :binds
    effect: str  # "read" | "write"
    returns: str  # "row": one object (error when nothing matches) | "rows": a list of objects
    table: str  # the table the tool is about
    # A multi-statement action (core/domains/actions.py): `checks` are queries that return a row, its first
    # column the error, when a precondition is violated; then `statements` write; then `sql` gives the
    # result. All run inside the call's one savepoint, so a failed check or statement changes nothing.
    checks: tuple[str, ...] = ()
    statements: tuple[str, ...] = ()

    @cached_property
    def spec_problem(self) -> str | None:
        """`parameters_problem` of this tool, found once (the spec of a frozen tool does not change)."""
        return parameters_problem(self.parameters)

    def openai_schema(self) -> dict:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("checks", "statements"):  # plain tools serialize as before
            if not d[key]:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SqlTool":
        return cls(**{**d, "checks": tuple(d.get("checks", ())), "statements": tuple(d.get("statements", ()))})


@dataclass(frozen=True)
class ToolResult:
    content: str  # what goes into the tool message, byte-for-byte reproducible
    ok: bool
    value: Any  # the decoded result (None on error)


def dump_json(value: Any) -> str:
    """The one serialization of tool results; the audit compares its output byte for byte.
    Non-finite numbers are refused (ValueError): they are not JSON."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def encode_result(value: Any, max_bytes: int) -> str:
    """`dump_json(value)`, or a ToolCallError if it is not JSON in UTF-8 or longer than `max_bytes`."""
    text, size = _encode(value)
    if size > max_bytes:
        raise ToolCallError(_too_large(max_bytes))
    return text


def _encode(value: Any) -> tuple[str, int]:
    try:
        text = dump_json(value)
        return text, len(text) if text.isascii() else len(text.encode("utf-8"))  # ASCII: 1 byte a character
    except ValueError as exc:  # a non-finite number, or a lone surrogate (UnicodeEncodeError)
        raise ToolCallError(f"the tool result cannot be encoded as JSON in UTF-8: {_clean(str(exc))[:120]}") from None


def _too_large(max_bytes: int) -> str:
    return f"the tool result exceeds the limit of {max_bytes} bytes; ask for fewer rows or fields"


def _clean(text: str) -> str:
    """Text safe to encode as UTF-8: lone surrogates become backslash escapes."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_result(message: str) -> ToolResult:
    return ToolResult(json.dumps({"error": _clean(message)}, ensure_ascii=False), ok=False, value=None)


def _json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v


def value_problem(value: Any) -> str | None:
    """Why `value` cannot travel as a tool argument (standard JSON, UTF-8 text, integers in SQLite's
    signed 64-bit range), or None. Walks nested lists and objects without recursion."""
    todo = [value]
    while todo:
        v = todo.pop()
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not INT64_MIN <= v <= INT64_MAX:
                return "an integer outside the signed 64-bit range"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return f"a non-finite number ({v})"
        elif isinstance(v, str):
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return "text that is not valid UTF-8 (a lone surrogate)"
        elif isinstance(v, list):
            todo.extend(v)
        elif isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return "an object key that is not a string"
            todo.extend(v)
            todo.extend(v.values())
        else:
            return f"a {type(v).__name__}, which is not a JSON value"
    return None


_ABSENT = object()


def _plain(v: Any) -> bool:
    """The common arguments, without `value_problem`'s general walk (the per-call fast path)."""
    t = type(v)
    return (t is str and v.isascii()) or (t is int and INT64_MIN <= v <= INT64_MAX) or v is None or t is bool \
        or (t is float and math.isfinite(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and value_problem(v) is None


def parameters_problem(parameters: Any) -> str | None:
    """Why a tool's parameter spec is unusable (the JSON-Schema subset `check_parameters` reads), or None."""
    if not isinstance(parameters, dict):
        return "parameters must be a JSON-Schema object"
    props, required = parameters.get("properties", {}), parameters.get("required", [])
    if not isinstance(props, dict) or not all(isinstance(k, str) for k in props):
        return "properties must be an object of named parameter specs"
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return "required must be a list of parameter names"
    for name, spec in props.items():
        if not isinstance(spec, dict):
            return f"the spec of parameter '{name}' must be an object"
        kind = spec.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if kind is not None and not all(isinstance(k, str) for k in kinds):
            return f"the type of parameter '{name}' must be a type name or a list of them"
        if "enum" in spec and not (isinstance(spec["enum"], list) and value_problem(spec["enum"]) is None):
            return f"the enum of parameter '{name}' must be a list of JSON values"
        for bound in ("minimum", "maximum"):
            if bound in spec and not _is_number(spec[bound]):
                return f"the {bound} of parameter '{name}' must be a finite number"
        if value_problem(spec.get("default")) is not None:
            return f"the default of parameter '{name}' is not a JSON value"
    return None


def check_arguments(tool: SqlTool, args: Any) -> dict[str, Any]:
    """Validate `args` against the tool's schema; return the complete bind dict (absent -> default/NULL)."""
    return _check(tool.name, tool.parameters, args, tool.spec_problem)


def check_parameters(tool: str, parameters: dict, args: Any) -> dict[str, Any]:
    """The argument check shared by executed and simulated tools (JSON-Schema subset: types, enums,
    ranges, required, no unknown keys, bounded strings, values SQLite and JSON can carry)."""
    return _check(tool, parameters, args, parameters_problem(parameters))


def _check(tool: str, parameters: dict, args: Any, problem: str | None) -> dict[str, Any]:
    if problem is not None:
        raise ToolCallError(f"tool {tool} has a malformed parameter spec: {problem}")
    if not isinstance(args, dict):
        raise ToolCallError(f"arguments for {tool} must be a JSON object, got {type(args).__name__}")
    props: dict = parameters.get("properties", {})
    unknown = set(args) - set(props)
    if unknown:
        if not all(isinstance(k, str) for k in unknown):
            raise ToolCallError(f"argument names for {tool} must be strings")
        raise ToolCallError(f"unknown argument(s) {sorted(unknown)} for {tool}; expected a subset of {sorted(props)}")
    missing = [p for p in parameters.get("required", []) if args.get(p) is None]
    if missing:
        raise ToolCallError(f"missing required argument(s) {missing} for {tool}")
    binds = {}
    for name, spec in props.items():
        value = args.get(name, _ABSENT)
        if value is _ABSENT:
            value = spec.get("default")  # checked with the spec
        elif not _plain(value) and (problem := value_problem(value)) is not None:
            raise ToolCallError(f"argument '{name}' of {tool} contains {problem}")
        if value is not None:
            _check_value(tool, name, spec, value)
        binds[name] = value
    return binds


TYPE_CHECKS = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
               "array": lambda v: isinstance(v, list), "object": lambda v: isinstance(v, dict),
               "null": lambda v: v is None}


def _check_value(tool: str, name: str, spec: dict, value: Any) -> None:
    kind = spec.get("type")
    if kind is not None:
        ok = TYPE_CHECKS.get(kind, _anything)(value) if isinstance(kind, str) else \
            any(TYPE_CHECKS.get(k, _anything)(value) for k in kind)
        if not ok:
            raise ToolCallError(f"argument '{name}' of {tool} must be of type {kind}, got {type(value).__name__} "
                                f"{json.dumps(value)[:40]}")
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise ToolCallError(f"argument '{name}' of {tool} is too long ({len(value)} characters, "
                            f"at most {MAX_STRING_CHARS})")
    if "enum" in spec and value not in spec["enum"]:
        raise ToolCallError(f"argument '{name}' of {tool} must be one of {spec['enum']}, got {value!r}")
    if ("minimum" in spec or "maximum" in spec) and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and not spec.get("minimum", -math.inf) <= value <= spec.get("maximum", math.inf):
        raise ToolCallError(f"argument '{name}' of {tool} must be between {spec.get('minimum')} and "
                            f"{spec.get('maximum')}, got {value}")


def _anything(_value: Any) -> bool:
    return True


def table_hash(conn: sqlite3.Connection, table: str) -> str:
    h = hashlib.sha256(table.encode())
    for row in sorted(repr(row) for row in conn.execute(f"SELECT * FROM {quote_ident(table)}")):
        h.update(row.encode())
    return h.hexdigest()


class SqlDomain:
    """A domain database loaded once into memory, plus its tools. Opens isolated sandboxes."""

    def __init__(self, db_path: Path, tools: list[SqlTool], tables: list[str], enforce_foreign_keys: bool = True,
                 time_limit_s: float = 2.0, max_result_bytes: int = MAX_RESULT_BYTES):
        self.db_path = Path(db_path)
        self.tools = {t.name: t for t in tools}
        self.tables = sorted(tables)
        self.enforce_foreign_keys = enforce_foreign_keys
        self.time_limit_s = time_limit_s
        self.max_result_bytes = max_result_bytes
        self._master = load_into_memory(self.db_path)
        # Worker threads copy and hash the master while the run's thread may close it (a run that ends with a
        # policy check still in its executor): SQLite crashes on a connection closed under a running backup.
        self._master_lock = threading.Lock()
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
            with self._master_lock:
                self._pristine[table] = table_hash(self._open_master(), table)
        return self._pristine[table]

    def open_sandbox(self) -> "Sandbox":
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        with self._master_lock:
            self._open_master().backup(conn)
        return Sandbox(conn, self)

    def _open_master(self) -> sqlite3.Connection:
        if self._master is None:
            raise ToolturnError(f"the domain database {self.db_path.name} is closed (its run has ended)")
        return self._master

    def openai_tools(self) -> list[dict]:
        return [t.openai_schema() for t in self.tools.values()]

    def close(self) -> None:
        with self._master_lock:
            if self._master is not None:
                self._master.close()
                self._master = None


SIDE_FILES = ("-wal", "-journal")  # un-checkpointed or uncommitted content SQLite keeps beside a database


def load_into_memory(db_path: Path) -> sqlite3.Connection:
    """Copy a database file into memory without writing anything beside it.

    The file is opened `immutable`: SQLite then creates no -wal/-shm/-journal files and takes no locks.
    Immutable also means SQLite would ignore a -wal file (committed data not yet checkpointed) and a
    hot -journal, so when one exists the database and its side files are copied byte for byte into a
    private temporary directory and opened there, where SQLite applies them as any reader would:
    what is loaded is what a normal connection to the source would see."""
    if not db_path.is_file():
        raise ToolturnError(f"database file not found: {db_path}")
    sides = [s for s in SIDE_FILES if Path(f"{db_path}{s}").is_file()]
    try:
        if not sides:
            return _backup_to_memory(Path(db_path).resolve().as_uri() + "?immutable=1")
        with tempfile.TemporaryDirectory(prefix="toolturn-db-") as tmp:
            copy = Path(tmp) / "db.sqlite"
            shutil.copyfile(db_path, copy)
            for side in sides:
                shutil.copyfile(f"{db_path}{side}", f"{copy}{side}")
            return _backup_to_memory(copy.as_uri())
    except sqlite3.DatabaseError as exc:
        raise ToolturnError(f"cannot read SQLite database {db_path}: {exc}") from None
    except OSError as exc:
        raise ToolturnError(f"cannot read {db_path}: {exc.strerror or exc}") from None


def _backup_to_memory(uri: str) -> sqlite3.Connection:
    src = sqlite3.connect(uri, uri=True)
    try:
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        mem = sqlite3.connect(":memory:", check_same_thread=False)
        src.backup(mem)
    finally:
        src.close()
    return mem


# CPU seconds a call may take on the event loop's thread (`Sandbox.try_call`). A thread handoff costs the loop
# about 60 us of CPU (futex and self-pipe syscalls: 17% of the loop's CPU per LLM call at 1,024 dialogues in
# flight, benchmarks/orchestration.py), more than most calls take; 2 ms stalls the other dialogues no longer
# than one reply's JSON parse.
INLINE_BUDGET_S = 0.002


class _OverBudget(Exception):
    """A `try_call` that reached its budget before the time limit (rolled back: nothing happened)."""


class Sandbox:
    """One dialogue's private database. `call` never raises for a bad call: it returns an error result,
    and the database is as it was before the call."""

    def __init__(self, conn: sqlite3.Connection, domain: SqlDomain):
        self.conn = conn
        self.domain = domain
        self._allowed = frozenset(domain.tables)
        self._in_tool = False  # the authorizer's rules for tool SQL apply
        self._writable = False
        # only tool calls are time-bounded, in CPU seconds of the thread running the call: whether a call hits the
        # limit depends on its work, not on how loaded the machine is (so a replay gets the same result)
        self._deadline = float("inf")
        self._length = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)  # outside tool calls
        self.dirty: set[str] = set()  # tables a write may have changed (see state_hash)
        for limit, value in CONNECTION_LIMITS.items():
            conn.setlimit(limit, value)
        if domain.enforce_foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._over_time, 1000)
        self._printer: sqlite3.Connection | None = None  # runs SQLite's own printf once the arguments passed
        self._function_error: str | None = None  # why a function of ours failed the statement
        self._busy = threading.Lock()  # held by a call, which may run in a worker thread (core/episode.execute)
        for name in PRINTF_FUNCTIONS:
            conn.create_function(name, -1, self._printf, deterministic=True)

    def _authorize(self, action: int, arg1, arg2, _db, _source) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):  # only the sandbox's own
            return sqlite3.SQLITE_DENY if self._in_tool else sqlite3.SQLITE_OK
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
        return 1 if time.thread_time() > self._deadline else 0

    def _printf(self, fmt: Any, *args: Any) -> Any:
        """SQLite's printf, with the length limit as an error: every width and precision is checked against
        it first (so no loop runs past it), and a result SQLite cut to NULL fails the statement."""
        if fmt is None:
            return None
        cap = self.conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        if self._printer is None:
            self._printer = sqlite3.connect(":memory:", check_same_thread=False)
        self._printer.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, cap)
        text = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else str(fmt)
        k = 0
        for width, precision, kind in PRINTF_SPEC.findall(text):
            for size in (width, precision):
                if size == "*":
                    size, k = (self._printer.execute("SELECT CAST(? AS INTEGER)", (args[k],)).fetchone()[0]
                               if k < len(args) else 0), k + 1
                if size and abs(int(size)) > cap:
                    self._function_error = f"a printf width or precision exceeds the limit of {cap} bytes"
                    raise ValueError(self._function_error)
            k += kind != "%"
        value = self._printer.execute(f"SELECT printf({', '.join('?' * (len(args) + 1))})", (fmt, *args)).fetchone()[0]
        if value is None:
            self._function_error = f"a printf result exceeds the limit of {cap} bytes"
            raise ValueError(self._function_error)
        return value

    def functions(self, sql: str, binds: dict[str, Any]) -> set[str]:
        """The SQL functions (lower-case names) that `sql` calls, as SQLite compiles it: never run."""
        seen: set[str] = set()

        def record(action: int, _arg1, arg2, _db, _source) -> int:
            if action == sqlite3.SQLITE_FUNCTION:
                seen.add((arg2 or "").lower())
            return sqlite3.SQLITE_OK
        self.conn.set_authorizer(record)
        try:  # a comment of its own: a cached statement would not be compiled, so not reported, again
            self.conn.execute(f"EXPLAIN /* {secrets.token_hex(8)} */ {sql}", binds).fetchall()
        except (sqlite3.Error, ValueError) as exc:
            raise ToolCallError(self._describe(exc)) from None
        finally:
            self.conn.set_authorizer(self._authorize)
        return seen

    def call(self, name: Any, arguments: Any) -> ToolResult:
        tool = self._tool(name)
        return tool if isinstance(tool, ToolResult) else self.run(tool, arguments)

    def try_call(self, name: Any, arguments: Any, budget_s: float | None = None) -> ToolResult | None:
        """`call`, if it finishes within `budget_s` CPU seconds (default INLINE_BUDGET_S); else None, with the
        database as it was (and the same while another thread is in a call): the call is then for `call` in a
        worker thread. Its result, when there is one, is the one `call` gives: a rolled-back attempt leaves no trace."""
        tool = self._tool(name)
        if isinstance(tool, ToolResult):
            return tool
        if not self._busy.acquire(blocking=False):
            return None
        try:
            if self.conn.in_transaction:  # inside an attempt(), whose writes an interrupted write would roll back
                return None
            return self._run(tool, arguments, INLINE_BUDGET_S if budget_s is None else budget_s)
        except _OverBudget:
            return None
        finally:
            self._busy.release()

    def _tool(self, name: Any) -> SqlTool | ToolResult:
        if not isinstance(name, str):
            return error_result(f"the tool name must be a string, got {type(name).__name__}")
        tool = self.domain.tools.get(name)
        if tool is None:
            return error_result(f"unknown tool '{name}'; available tools: {sorted(self.domain.tools)}")
        return tool

    def run(self, tool: SqlTool, arguments: Any) -> ToolResult:
        """Execute any tool (also one not registered with the domain, e.g. a candidate being checked)."""
        with self._busy:
            return self._run(tool, arguments, None)

    def _run(self, tool: SqlTool, arguments: Any, budget_s: float | None) -> ToolResult:
        try:
            value, content = self._execute(tool, arguments, budget_s)
        except ToolCallError as exc:
            return error_result(str(exc))
        return ToolResult(content, ok=True, value=value)

    def _execute(self, tool: SqlTool, arguments: Any, budget_s: float | None = None) -> tuple[Any, str]:
        """The call's result; past `budget_s` (when below the time limit) _OverBudget, rolled back."""
        binds = check_arguments(tool, arguments)
        self._function_error = None
        budgeted = budget_s is not None and budget_s < self.domain.time_limit_s
        self.conn.execute("SAVEPOINT tool_call")
        done = False
        try:
            self._in_tool, self._writable = True, tool.effect == "write"
            self._deadline = time.thread_time() + (budget_s if budgeted else self.domain.time_limit_s)
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.domain.max_result_bytes)
            cur = self.conn.cursor()
            try:
                # The prefix keeps a tool's statement out of the statement cache entries of the sandbox's
                # own statements and of tools with another effect: a cached statement is not authorized again.
                prefix = TOOL_SQL_PREFIX[tool.effect == "write"]
                for check in tool.checks:
                    violated = cur.execute(prefix + check, binds).fetchone()
                    if violated is not None and violated[0] is not None:
                        raise ToolCallError(_clean(str(violated[0]))[:300])
                for statement in tool.statements:
                    cur.execute(prefix + statement, binds)
                result = self._collect(tool, cur.execute(TOOL_SQL_PREFIX[tool.effect == "write"] + tool.sql, binds), binds)
            finally:
                cur.close()
                self._in_tool = self._writable = False
                self._deadline = float("inf")
                self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self._length)
            done = True
        except (sqlite3.Error, ValueError, OverflowError) as exc:  # ValueError: SQL text not UTF-8
            if budgeted and str(exc) == "interrupted":  # only the progress handler interrupts
                raise _OverBudget from None
            raise ToolCallError(self._describe(exc)) from None
        finally:  # any failure, also an unexpected one, leaves no trace and no open transaction
            # unless SQLite rolled back the whole transaction already, as it does when a write is interrupted
            if self.conn.in_transaction:
                if not done:
                    self.conn.execute("ROLLBACK TO tool_call")
                self.conn.execute("RELEASE tool_call")
        return result

    def _collect(self, tool: SqlTool, cur: sqlite3.Cursor, binds: dict) -> tuple[Any, str]:
        """The result and its encoding, stopping as soon as it exceeds the cap."""
        cap = self.domain.max_result_bytes
        if cur.description is None:  # a write without RETURNING
            value = {"changed_rows": cur.rowcount}
            return value, encode_result(value, cap)
        names = [d[0] for d in cur.description]
        if tool.returns == "row":
            row = cur.fetchone()
            if row is None:
                shown = {k: v for k, v in binds.items() if v is not None}
                raise ToolCallError(f"no {tool.table} record found for {dump_json(shown)}")
            value = {k: _json_value(v) for k, v in zip(names, row)}
            return value, encode_result(value, cap)
        rows, parts, size = [], [], 0
        while batch := cur.fetchmany(FETCH_ROWS):
            chunk = [{k: _json_value(v) for k, v in zip(names, row)} for row in batch]
            # json.dumps of a list is "[" + ", ".join(items) + "]": chunks join to the same bytes, and
            # their sizes add up (one chunk's brackets become the ", " between two)
            text, n = _encode(chunk)
            size += n
            if size > cap:
                raise ToolCallError(_too_large(cap))
            rows += chunk
            parts.append(text[1:-1])
        return rows, "[" + ", ".join(parts) + "]"

    def _describe(self, exc: Exception) -> str:
        text = str(exc)
        if self._function_error is not None and "user-defined function raised exception" in text:
            return self._function_error
        if text == "interrupted":
            return f"query exceeded the time limit of {self.domain.time_limit_s:g} s"
        if text == "string or blob too big":
            return f"a value in the query exceeds the limit of {self.domain.max_result_bytes} bytes"
        if "not authorized" in text or "prohibited" in text:
            return f"operation not permitted: {text}"
        return f"database error: {_clean(text)[:300]}"

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Run several calls as one unit: if the block raises, every write in it is rolled back. A write in it
        interrupted at the time limit makes SQLite roll back the whole attempt: then a ToolCallError says so."""
        self.conn.execute("SAVEPOINT attempt")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK TO attempt")
                self.conn.execute("RELEASE attempt")
            raise
        if not self.conn.in_transaction:
            raise ToolCallError("a write hit the time limit, and SQLite rolled back the whole attempt")
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
        with self._busy:  # a call still running in a worker thread (its dialogue was cancelled) ends first
            self.conn.close()
            if self._printer is not None:
                self._printer.close()
