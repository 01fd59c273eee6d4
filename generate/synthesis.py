"""LLM-synthesized domains and tools.

Simulated-tool path (the paper's task-oriented pipeline): a domain name or seed tools -> 20-30 user
questions -> tool specs per question -> up to 10 complementary tools -> a return JSON Schema per tool.
Executed-tool path: LLM-written SQL tools over any schema, admitted only through `sqlcheck`; and an
LLM-written schema (DDL plus seed rows) that becomes a new SQLite domain under the same import checks.
Every rejected item is counted by reason.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import jsonschema
import sqlglot
from sqlglot import exp
from toolturn.core.errors import ToolturnError
from toolturn.core.llm import extract_json_value
from toolturn.core.prompts import load as load_prompt
from toolturn.core.role_model import RoleModel
from toolturn.core.sqlenv import SqlTool
from toolturn.core.sqlschema import quote_ident
from toolturn.generate.sqlcheck import NAME, Rejected, check_sql_tool

JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object"}


async def ask_json(model: RoleModel, prompt: str, kind: type, rejections: Counter, what: str, attempts: int = 2):
    """One prompt, a JSON value of `kind` back; one repair; None (counted) when it never comes."""
    messages = [{"role": "user", "content": prompt}]
    for _ in range(attempts):
        reply = await model.chat(messages)
        value = extract_json_value(reply.content)
        if isinstance(value, kind):
            return value
        messages += [{"role": "assistant", "content": reply.content},
                     {"role": "user", "content": f"Reply with only a JSON {kind.__name__}, nothing else."}]
    rejections[f"{what}:malformed_json"] += 1
    return None


def valid_tool_spec(tool) -> str | None:
    """Why an OpenAI function spec is unusable (None when it is fine)."""
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not NAME.fullmatch(fn["name"]):
        return "bad_name"
    params = fn.get("parameters")
    if not isinstance(params, dict) or params.get("type") != "object" or not isinstance(params.get("properties", {}), dict):
        return "bad_parameters"
    if not all(isinstance(s, dict) and s.get("type") in JSON_TYPES for s in params.get("properties", {}).values()):
        return "bad_parameter_type"
    if not isinstance(fn.get("description"), str) or not fn["description"].strip():
        return "no_description"
    return None


def _admit(candidates, tools: dict[str, dict], rejections: Counter, limit: int | None = None) -> None:
    for tool in candidates if isinstance(candidates, list) else []:
        if limit is not None and limit <= 0:
            break
        reason = valid_tool_spec(tool)
        if reason is None and tool["function"]["name"] in tools:
            reason = "duplicate_name"
        if reason:
            rejections[f"tool_spec:{reason}"] += 1
            continue
        fn = tool["function"]
        fn["parameters"].setdefault("required", [])
        tools[fn["name"]] = {"type": "function", "function": {k: fn[k] for k in ("name", "description", "parameters")}}
        if limit is not None:
            limit -= 1


async def synthesize_toolset(model: RoleModel, domain: str, seed_tools: list[dict], n_questions: int,
                             max_questions_for_tools: int, rejections: Counter) -> tuple[list[dict], list[str]]:
    seed = ("Example tools:\n" + json.dumps(seed_tools, ensure_ascii=False)) if seed_tools else ""
    questions = await ask_json(model, load_prompt("questions").format(domain=domain, seed_tools=seed, n=n_questions),
                               list, rejections, "questions") or []
    questions = [q for q in questions if isinstance(q, str) and q.strip()]
    tools: dict[str, dict] = {}
    _admit(seed_tools, tools, rejections)
    for question in questions[:max_questions_for_tools]:
        specs = await ask_json(model, load_prompt("tool_generation").format(domain=domain, question=question),
                               list, rejections, "tool_generation")
        _admit(specs, tools, rejections)
    extra = await ask_json(model, load_prompt("tool_expansion").format(
        domain=domain, tools=json.dumps(list(tools.values()), ensure_ascii=False)), list, rejections, "tool_expansion")
    _admit(extra, tools, rejections, limit=10)
    if not tools:
        raise ToolturnError(f"the LLM produced no usable tool for domain '{domain}' (rejections: {dict(rejections)})")
    return list(tools.values()), questions


def default_return_schema(name: str) -> dict:
    many = name.startswith(("search_", "list_"))
    return {"type": "array", "items": {"type": "object"}} if many else {"type": "object"}


async def predict_return_schemas(model: RoleModel, tools: list[dict], rejections: Counter) -> dict[str, dict]:
    """One schema per tool, in one growing conversation so that shared entities keep their types."""
    schemas: dict[str, dict] = {}
    for tool in tools:
        name = tool["function"]["name"]
        prompt = load_prompt("return_schema").format(previous=json.dumps(schemas, ensure_ascii=False) or "{}",
                                                     tool_spec=json.dumps(tool, ensure_ascii=False))
        schema = await ask_json(model, prompt, dict, rejections, "return_schema")
        try:
            if schema is None:
                raise jsonschema.SchemaError("no schema")
            jsonschema.Draft202012Validator.check_schema(schema)
            if schema.get("type") not in ("object", "array"):
                raise jsonschema.SchemaError("top level must be object or array")
        except jsonschema.SchemaError:
            if schema is not None:
                rejections["return_schema:invalid"] += 1
            schema = default_return_schema(name)
        schemas[name] = schema
    return schemas


async def write_sql_tools(model: RoleModel, domain, schema_sql: str, data_view: str, n: int,
                          rejections: Counter) -> list[SqlTool]:
    candidates = await ask_json(model, load_prompt("sql_tools").format(
        description=domain.description, schema=schema_sql, data_view=data_view, n=n), list, rejections, "sql_tools")
    admitted: list[SqlTool] = []
    taken = {t.name for t in domain.tools}
    sandbox = domain.env.open_sandbox()
    try:
        for candidate in candidates or []:
            try:
                tool = check_sql_tool(candidate, domain.schema, sandbox, taken)
            except Rejected as exc:
                rejections[f"sql_tool:{exc.reason}"] += 1
                continue
            taken.add(tool.name)
            admitted.append(tool)
    finally:
        sandbox.close()
    return admitted


def build_schema_database(spec: dict, path: Path) -> None:
    """Create a SQLite file from an LLM-written {ddl, rows}; only CREATE TABLE is accepted."""
    ddl, rows = spec.get("ddl"), spec.get("rows")
    if not isinstance(ddl, str) or not isinstance(rows, dict):
        raise Rejected("malformed", "needs ddl (string) and rows (object)")
    try:
        statements = [s for s in sqlglot.parse(ddl, read="sqlite") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise Rejected("parse_error", str(exc).splitlines()[0][:120]) from None
    if not statements or not all(isinstance(s, exp.Create) and s.kind == "TABLE" for s in statements):
        raise Rejected("forbidden_statement", "the DDL may only contain CREATE TABLE statements")
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        for statement in statements:
            conn.execute(statement.sql(dialect="sqlite"))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, items in rows.items():
            if table not in tables or not isinstance(items, list):
                raise Rejected("unknown_table", str(table))
            for item in items:
                if not isinstance(item, dict) or not item:
                    continue
                cols = ", ".join(quote_ident(c) for c in item)
                marks = ", ".join("?" for _ in item)
                values = [v if isinstance(v, (str, int, float)) or v is None else json.dumps(v) for v in item.values()]
                conn.execute(f"INSERT INTO {quote_ident(table)} ({cols}) VALUES ({marks})", values)
        conn.commit()
        if sum(conn.execute(f"SELECT COUNT(*) FROM {quote_ident(t)}").fetchone()[0] for t in tables) == 0:
            raise Rejected("no_rows", "the seed data is empty")
    except sqlite3.Error as exc:
        conn.close()
        path.unlink(missing_ok=True)
        raise Rejected("sqlite_error", str(exc)[:160]) from None
    conn.close()


async def synthesize_schema(model: RoleModel, domain: str, path: Path, rejections: Counter, attempts: int = 3) -> None:
    for _ in range(attempts):
        spec = await ask_json(model, load_prompt("schema_synthesis").format(domain=domain), dict, rejections,
                              "schema_synthesis")
        if spec is None:
            continue
        try:
            build_schema_database(spec, path)
            return
        except Rejected as exc:
            rejections[f"schema:{exc.reason}"] += 1
    raise ToolturnError(f"the LLM did not produce a usable schema for '{domain}' in {attempts} attempts "
                        f"(rejections: {dict(rejections)})")
