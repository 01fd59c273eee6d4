"""Domain actions: the operations a real customer service exposes, beside the schema-derived tools.

An action is an `SqlTool` whose `checks` run first (each a query that returns a row, its first column
the error, when a precondition is violated), then its `statements` (the writes), then its `sql`
(the result), all inside the sandbox's one savepoint: a violated precondition comes back as that
error, with nothing changed. Everything an action writes is derived from the database state and its
arguments (new numbers from the next free id, the domain's fixed "now"), so the audit replays it
byte for byte.
"""

from __future__ import annotations

from toolturn.core.sqlenv import SqlTool

NOW = "2026-01-01T12:00"  # the domains' reference moment (`_seed.REFERENCE_DATE`), as the actions' clock
TODAY = NOW[:10]


def param(kind: str, description: str, **extra) -> dict:
    return {"type": kind, "description": description, **extra}


def action(name: str, description: str, table: str, params: dict[str, dict], sql: str, *,
           checks: tuple[str, ...] = (), statements: tuple[str, ...] = (), returns: str = "row",
           required: list[str] | None = None) -> SqlTool:
    return SqlTool(name=name, description=description,
                   parameters={"type": "object", "properties": params,
                               "required": list(params) if required is None else required},
                   sql=sql, effect="write" if statements else "read", returns=returns, table=table,
                   checks=tuple(checks), statements=tuple(statements))


def exists(table: str, column: str, what: str) -> str:
    """Check: the record named by `:column` exists."""
    return (f"SELECT 'no {what} ' || :{column} || ' was found' "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {column} = :{column})")


def owned(table: str, column: str, owner: str, what: str, account: str = "this account") -> str:
    """Check: the record belongs to the verified owner (the error names no other owner)."""
    return (f"SELECT '{what} ' || :{column} || ' does not belong to {account}' "
            f"FROM {table} WHERE {column} = :{column} AND {owner} IS NOT :{owner}")


def in_state(table: str, column: str, state: str, allowed: tuple[str, ...], what: str, verb: str) -> str:
    """Check: the record's state is one of `allowed`."""
    listed = ", ".join(f"'{a}'" for a in allowed)
    plural = " or ".join(allowed)
    return (f"SELECT '{what} ' || :{column} || ' is ' || {state} || '; only {plural} {what}s can be {verb}' "
            f"FROM {table} WHERE {column} = :{column} AND {state} NOT IN ({listed})")


def next_id(table: str) -> str:
    return f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table})"
