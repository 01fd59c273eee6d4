"""Admission checks for LLM-written SQL tools (`docs/architecture.md` §6).

A candidate `{name, description, parameters, sql}` becomes a `SqlTool` only if the SQL parses with
sqlglot as exactly one SELECT / INSERT / UPDATE / DELETE, touches only the domain's tables and
columns, its :binds match the declared parameters, it calls only ADMITTED_FUNCTIONS (as SQLite compiles
it), and a dry run with sample arguments succeeds
inside the sandbox (authorizer, time limit and result cap on) and is rolled back. Transaction control
(BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, END) is no statement a tool may be. A parameter spec of
any shape is checked, never trusted. Each rejection has a reason that the caller counts.
"""

from __future__ import annotations

import re
from typing import Any

import sqlglot
from sqlglot import exp
from toolturn.core.errors import ToolCallError
from toolturn.core.sqlenv import Sandbox, SqlTool, check_arguments, parameters_problem, value_problem
from toolturn.core.sqlschema import Schema

NAME = re.compile(r"[a-z][a-z0-9_]{2,63}")
JSON_TYPES = {"string", "integer", "number", "boolean"}
TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
STATEMENTS = {exp.Select: "read", exp.Union: "read", exp.Insert: "write", exp.Update: "write", exp.Delete: "write"}
# What an LLM-written tool may call: functions of their arguments alone, deterministic (the audit replays every
# call byte for byte), whose work the length limit and the progress handler bound. Not printf/format (a width
# or precision is work no time limit interrupts), random/randomblob (no replay), zeroblob (only builds size),
# changes/last_insert_rowid/total_changes (connection state), sqlite_*, load_extension or any other.
ADMITTED_FUNCTIONS = frozenset({
    "abs", "char", "coalesce", "concat", "concat_ws", "glob", "hex", "ifnull", "iif", "instr", "length", "like",
    "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "octet_length", "quote", "replace", "round",
    "rtrim", "sign", "substr", "substring", "trim", "typeof", "unicode", "unlikely", "upper",
    "avg", "count", "group_concat", "string_agg", "sum", "total",
    "date", "time", "datetime", "julianday", "unixepoch", "strftime",
    "ceil", "ceiling", "floor", "trunc", "mod", "pow", "power", "sqrt", "exp", "ln", "log", "log10", "log2",
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
    "json", "json_array", "json_array_length", "json_extract", "json_object", "json_type", "json_valid",
    "json_quote", "json_group_array", "json_group_object",
})


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _sample_value(spec: dict) -> Any:
    if spec.get("enum"):
        return spec["enum"][0]
    kind = spec["type"]
    if kind in ("integer", "number") and ("minimum" in spec or "maximum" in spec):
        value = spec.get("minimum", spec.get("maximum"))
        return int(value) if kind == "integer" and float(value).is_integer() else value
    return {"integer": 1, "number": 1.0, "boolean": True}.get(kind, "a")


def check_sql_tool(candidate: Any, schema: Schema, sandbox: Sandbox, taken: set[str]) -> SqlTool:
    """Return the admitted tool or raise `Rejected(reason)`."""
    if not isinstance(candidate, dict) or not {"name", "description", "parameters", "sql"} <= set(candidate):
        raise Rejected("malformed", "needs name, description, parameters and sql")
    name, sql, params = candidate["name"], candidate["sql"], candidate["parameters"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Rejected("bad_name", name[:60] if isinstance(name, str) else f"a {type(name).__name__}")
    if name in taken:
        raise Rejected("duplicate_name", name)
    description = candidate["description"]
    texts_ok = isinstance(sql, str) and isinstance(description, str) and not value_problem([sql, description])
    if not texts_ok or "\0" in sql or not isinstance(params, dict) or params.get("type") != "object":
        raise Rejected("malformed", "sql and description must be UTF-8 text and parameters a JSON-Schema object")
    problem = parameters_problem(params)
    if problem is not None:
        raise Rejected("bad_parameters", problem)
    props = params.get("properties") or {}
    if not all(isinstance(s.get("type"), str) and s["type"] in JSON_TYPES for s in props.values()):
        raise Rejected("bad_parameters", "every parameter needs a type among " + ", ".join(sorted(JSON_TYPES)))
    required = [r for r in params.get("required", []) if r in props]
    try:
        tokens = sqlglot.tokenize(sql, read="sqlite")
        if any(t.text.upper() in TRANSACTION_CONTROL for i, t in enumerate(tokens)
               if i == 0 or tokens[i - 1].token_type == sqlglot.TokenType.SEMICOLON):
            raise Rejected("transaction_control", "a tool cannot begin, commit or roll back a transaction")
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        raise Rejected("parse_error", str(exc).splitlines()[0][:120]) from None
    if len(statements) != 1:
        raise Rejected("not_one_statement", f"{len(statements)} statements")
    tree = statements[0]
    effect = next((e for kind, e in STATEMENTS.items() if isinstance(tree, kind)), None)
    if effect is None:
        raise Rejected("forbidden_statement", type(tree).__name__)
    _check_names(tree, schema)
    binds = {p.this for p in tree.find_all(exp.Placeholder) if isinstance(p.this, str)}
    if binds != set(props):
        raise Rejected("parameter_mismatch", f"sql binds {sorted(binds)} vs parameters {sorted(props)}")
    try:
        called = sandbox.functions(sql, {p: None for p in props})
    except ToolCallError as exc:
        raise Rejected("dry_run_error", str(exc)[:160]) from None
    forbidden = sorted(called - ADMITTED_FUNCTIONS)
    if forbidden:
        raise Rejected("forbidden_function", ", ".join(forbidden))
    tables = [t.name for t in tree.find_all(exp.Table)]
    tool = SqlTool(name=name, description=description[:500],
                   parameters={"type": "object", "properties": props, "required": required}, sql=sql,
                   effect=effect, returns="rows", table=tables[0] if tables else "")
    _dry_run(tool, sandbox)
    return tool


def _check_names(tree: exp.Expression, schema: Schema) -> None:
    known = {name.lower(): t for name, t in schema.tables.items()}
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    used = []
    for table in tree.find_all(exp.Table):
        key = table.name.lower()
        if key not in known and key not in ctes:
            raise Rejected("unknown_table", table.name)
        if key in known:
            used.append(known[key])
    columns = {c.name.lower() for t in used for c in t.columns} | {c.param for t in used for c in t.columns}
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
    for col in tree.find_all(exp.Column):
        if col.name and col.name.lower() not in columns | aliases and not ctes:
            raise Rejected("unknown_column", col.name)


def _dry_run(tool: SqlTool, sandbox: Sandbox) -> None:
    """Execute once with sample arguments inside a savepoint that is always rolled back."""
    args = {p: _sample_value(s) for p, s in tool.parameters["properties"].items()}
    try:
        check_arguments(tool, args)
    except ToolCallError as exc:
        raise Rejected("bad_parameters", str(exc)) from None
    result = None
    try:
        with sandbox.attempt():
            result = sandbox.run(tool, args)
            raise _RollBack
    except _RollBack:
        pass
    if not result.ok:
        error = result.content
        # constraint failures on sample values are fine; the statement itself compiled and ran
        if "constraint failed" not in error:
            raise Rejected("dry_run_error", error[:160])


class _RollBack(Exception):
    """Raised inside `Sandbox.attempt` to undo the dry run's writes."""
