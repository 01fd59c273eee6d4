"""Derive executable SQL tools from a database schema.

Per table: get by key, search by columns (equality, and LIKE for free text), list related rows across
each foreign key, grouped aggregates over low-cardinality columns, and create / update / delete.
Tool and parameter names are ASCII snake_case whatever the database calls things; results use the
parameter names as keys, so an entity keeps one name across inputs and outputs.
"""

from __future__ import annotations

import logging
import sqlite3

from toolturn.core.sqlenv import SqlTool
from toolturn.core.sqlschema import Column, ForeignKey, Schema, Table, quote_ident

log = logging.getLogger(__name__)

MAX_ENUM_VALUES = 8
MAX_SEARCH_FILTERS = 6
MAX_RESULTS = 50
DEFAULT_RESULTS = 10


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def plural(word: str) -> str:
    word = singular(word)
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


def label(param: str) -> str:
    return param.replace("_", " ")


def enum_values(conn: sqlite3.Connection, table: Table) -> dict[str, list]:
    """Text columns with few distinct values (and enough rows to call them categorical) get enums."""
    out = {}
    for col in table.columns:
        if col.affinity != "text" or col.pk_index or table.row_count < 2 * MAX_ENUM_VALUES:
            continue
        q = quote_ident(col.name)
        values = [r[0] for r in conn.execute(
            f"SELECT DISTINCT {q} FROM {quote_ident(table.name)} WHERE {q} IS NOT NULL LIMIT {MAX_ENUM_VALUES + 1}")]
        if 2 <= len(values) <= MAX_ENUM_VALUES and all(isinstance(v, str) for v in values):
            out[col.name] = sorted(values)
    return out


class _TableTools:
    """Builds the tools of one table; one method per tool kind."""

    def __init__(self, schema: Schema, table: Table, entity: str, enums: dict[str, list]):
        self.schema, self.t, self.enums = schema, table, enums
        self.one = entity
        self.many = plural(entity)
        self.q = quote_ident(table.name)
        self.fk_columns = {c for fk in table.foreign_keys for c in fk.columns}
        self.select = table.select_list

    def param(self, col: Column, description: str | None = None) -> dict:
        spec: dict = {"type": col.json_type, "description": description or f"{label(col.param)} of the {self.one}"}
        if col.name in self.enums:
            spec["enum"] = self.enums[col.name]
        return spec

    def key_where(self, cols: list[Column]) -> str:
        return " AND ".join(f"{quote_ident(c.name)} = :{c.param}" for c in cols)

    def tool(self, name, description, props, required, sql, effect, returns) -> SqlTool:
        return SqlTool(name=name, description=description,
                       parameters={"type": "object", "properties": props, "required": required},
                       sql=sql, effect=effect, returns=returns, table=self.t.name)

    @staticmethod
    def limit_param() -> dict:
        return {"type": "integer", "description": f"maximum number of results (default {DEFAULT_RESULTS})",
                "minimum": 1, "maximum": MAX_RESULTS, "default": DEFAULT_RESULTS}

    def get(self) -> SqlTool:
        pk = self.t.primary_key
        return self.tool(
            f"get_{self.one}", f"Get one {label(self.one)} by its {' and '.join(label(c.param) for c in pk)}.",
            {c.param: self.param(c) for c in pk}, [c.param for c in pk],
            f"SELECT {self.select} FROM {self.q} WHERE {self.key_where(pk)}", "read", "row")

    def search(self) -> SqlTool | None:
        ranked = sorted((c for c in self.t.columns if not c.pk_index),
                        key=lambda c: (c.name not in self.enums, c.affinity != "text", c.name in self.fk_columns))
        filters = ranked[:MAX_SEARCH_FILTERS]
        if not filters:
            return None
        props, clauses = {}, []
        for c in filters:
            qc = quote_ident(c.name)
            if c.affinity == "text" and c.name not in self.enums:
                props[c.param] = self.param(c, f"text contained in the {label(c.param)} (case-insensitive)")
                clauses.append(f"(:{c.param} IS NULL OR {qc} LIKE '%' || :{c.param} || '%')")
            else:
                props[c.param] = self.param(c, f"exact {label(c.param)}")
                clauses.append(f"(:{c.param} IS NULL OR {qc} = :{c.param})")
        props["max_results"] = self.limit_param()
        return self.tool(
            f"search_{self.many}",
            f"Search {label(self.many)} by any of: {', '.join(label(c.param) for c in filters)}. "
            f"All given filters must match. Returns a list ordered by key.",
            props, [], f"SELECT {self.select} FROM {self.q} WHERE {' AND '.join(clauses)} "
                       f"ORDER BY {self.t.order_by} LIMIT :max_results", "read", "rows")

    def list_related(self, fk: ForeignKey, name: str) -> SqlTool:
        parent = self.schema.tables[fk.ref_table]
        cols = [self.t.column(c) for c in fk.columns]
        props = {c.param: self.param(c, f"{label(c.param)} of the {label(singular(parent.slug))}") for c in cols}
        props["max_results"] = self.limit_param()
        return self.tool(
            name, f"List the {label(self.many)} linked to one {label(singular(parent.slug))} "
                  f"through {', '.join(label(c.param) for c in cols)}.",
            props, [c.param for c in cols],
            f"SELECT {self.select} FROM {self.q} WHERE {self.key_where(cols)} ORDER BY {self.t.order_by} "
            f"LIMIT :max_results", "read", "rows")

    def summarize(self, group: Column) -> SqlTool:
        measure = next((c for c in self.t.columns if c.affinity == "real" and not c.pk_index), None)
        aggs = ", COUNT(*) AS \"count\""
        if measure is not None:
            qm, m = quote_ident(measure.name), measure.param
            aggs += f", ROUND(SUM({qm}), 2) AS \"total_{m}\", ROUND(AVG({qm}), 2) AS \"average_{m}\""
        scope = next((fk for fk in self.t.foreign_keys if len(fk.columns) == 1), None)
        props, where = {}, ""
        if scope is not None:
            sc = self.t.column(scope.columns[0])
            props[sc.param] = self.param(sc, f"only count {label(self.many)} with this {label(sc.param)} (optional)")
            where = f" WHERE (:{sc.param} IS NULL OR {quote_ident(sc.name)} = :{sc.param})"
        qg = quote_ident(group.name)
        what = f"count{' and ' + label(measure.param) + ' totals' if measure else ''}"
        return self.tool(
            f"summarize_{self.many}_by_{group.param}",
            f"Group {label(self.many)} by {label(group.param)} and return the {what} per group.",
            props, [], f"SELECT {qg} AS {quote_ident(group.param)}{aggs} FROM {self.q}{where} GROUP BY {qg} ORDER BY {qg}",
            "read", "rows")

    def create(self) -> SqlTool | None:
        pk = self.t.primary_key
        auto_id = len(pk) == 1 and pk[0].declared_type.upper() == "INTEGER"
        cols = [c for c in self.t.columns if not (auto_id and c.pk_index) and not (c.notnull and c.has_default)]
        if not cols:
            return None
        required = [c.param for c in cols if c.notnull and not c.has_default]
        names = ", ".join(quote_ident(c.name) for c in cols)
        binds = ", ".join(f":{c.param}" for c in cols)
        return self.tool(
            f"create_{self.one}", f"Create a new {label(self.one)}; returns the stored record"
                                  f"{' with its new ' + label(pk[0].param) if auto_id else ''}.",
            {c.param: self.param(c) for c in cols}, required,
            f"INSERT INTO {self.q} ({names}) VALUES ({binds}) RETURNING {self.select}", "write", "row")

    def update(self) -> SqlTool | None:
        pk = self.t.primary_key
        cols = [c for c in self.t.columns if not c.pk_index]
        if not cols:
            return None
        sets = ", ".join(f"{quote_ident(c.name)} = COALESCE(:{c.param}, {quote_ident(c.name)})" for c in cols)
        props = {c.param: self.param(c) for c in pk}
        props.update({c.param: self.param(c, f"new {label(c.param)} (omit to keep)") for c in cols})
        return self.tool(
            f"update_{self.one}", f"Change fields of one {label(self.one)}; omitted fields keep their value. "
                                  f"Returns the updated record.",
            props, [c.param for c in pk],
            f"UPDATE {self.q} SET {sets} WHERE {self.key_where(pk)} RETURNING {self.select}", "write", "row")

    def delete(self) -> SqlTool:
        pk = self.t.primary_key
        return self.tool(
            f"delete_{self.one}", f"Delete one {label(self.one)}; returns the deleted record.",
            {c.param: self.param(c) for c in pk}, [c.param for c in pk],
            f"DELETE FROM {self.q} WHERE {self.key_where(pk)} RETURNING {self.select}", "write", "row")


def derive_tools(conn: sqlite3.Connection, schema: Schema) -> tuple[list[SqlTool], dict[str, str]]:
    """All tools for the schema, plus {what: reason} for everything that got no tool."""
    skipped: dict[str, str] = {}
    entities: dict[str, str] = {}
    for name in sorted(schema.tables):
        entity = singular(schema.tables[name].slug)
        while entity in entities.values():
            entity += "_t"
        entities[name] = entity
    tools: list[SqlTool] = []
    for name in sorted(schema.tables):
        table = schema.tables[name]
        for col, reason in table.skipped_columns.items():
            skipped[f"{name}.{col}"] = reason
        b = _TableTools(schema, table, entities[name], enum_values(conn, table))
        search = b.search()
        if search is not None:
            tools.append(search)
        else:
            skipped[f"{name}:search"] = "no searchable column"
        if table.primary_key:
            tools += [t for t in (b.get(), b.create(), b.update(), b.delete()) if t is not None]
        else:
            skipped[f"{name}:get/create/update/delete"] = "no primary key: rows cannot be addressed"
        fk_parents = [fk.ref_table for fk in table.foreign_keys]
        for fk in table.foreign_keys:
            parent_entity = entities[fk.ref_table]
            unique = fk_parents.count(fk.ref_table) == 1 and fk.ref_table != name
            suffix = f"for_{parent_entity}" if unique else "by_" + "_and_".join(table.column(c).param for c in fk.columns)
            tools.append(b.list_related(fk, f"list_{b.many}_{suffix}"))
        for col in table.columns:
            if col.name in b.enums:
                tools.append(b.summarize(col))
    names = [t.name for t in tools]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:  # e.g. tables "order" and "orders": keep the first, log the rest
        seen: set[str] = set()
        unique_tools = []
        for t in tools:
            if t.name in seen:
                skipped[f"{t.table}:{t.name}"] = "tool name collides with another table's tool"
                continue
            seen.add(t.name)
            unique_tools.append(t)
        tools = unique_tools
    return tools, skipped
