"""Introspection of a SQLite schema into typed dataclasses, tolerant of real-world quirks."""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from dataclasses import dataclass, field

# Declared-type affinity rules, SQLite docs section 3.1, in order.
_AFFINITY_RULES = (("INT", "integer"), ("CHAR", "text"), ("CLOB", "text"), ("TEXT", "text"),
                   ("BLOB", "blob"), ("REAL", "real"), ("FLOA", "real"), ("DOUB", "real"))


def affinity(declared_type: str) -> str:
    upper = (declared_type or "").upper()
    if not upper:
        return "blob"  # no declared type: SQLite's BLOB ("none") affinity
    for needle, aff in _AFFINITY_RULES:
        if needle in upper:
            return aff
    return "numeric"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def slugify(name: str) -> str:
    """snake_case ASCII identifier: 'Order Details' -> 'order_details', 'Straße' -> 'strasse'."""
    name = name.replace("ß", "ss")
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", ascii_name).strip("_").lower()
    return slug


@dataclass(frozen=True)
class Column:
    name: str  # as declared in the database
    param: str  # ASCII snake_case name used in tool parameters and results
    declared_type: str
    affinity: str
    notnull: bool
    has_default: bool
    pk_index: int  # 0 = not part of the primary key, else 1-based position
    unique: bool = False  # a single-column UNIQUE constraint or index

    @property
    def json_type(self) -> str:
        return {"integer": "integer", "real": "number", "numeric": "number"}.get(self.affinity, "string")


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]  # in the child table
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass
class Table:
    name: str
    slug: str
    columns: list[Column]
    foreign_keys: list[ForeignKey]
    row_count: int
    without_rowid: bool = False
    skipped_columns: dict[str, str] = field(default_factory=dict)  # column name -> reason

    @property
    def primary_key(self) -> list[Column]:
        return sorted((c for c in self.columns if c.pk_index), key=lambda c: c.pk_index)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def select_list(self) -> str:
        """Every column under its parameter name: `"Col A" AS "col_a", ...`."""
        return ", ".join(f"{quote_ident(c.name)} AS {quote_ident(c.param)}" for c in self.columns)

    @property
    def order_by(self) -> str:
        keys = self.primary_key
        if keys:
            return ", ".join(quote_ident(c.name) for c in keys)
        return "rowid"


@dataclass
class Schema:
    tables: dict[str, Table]
    skipped: dict[str, str]  # object name -> reason it cannot be used

    def children_of(self, table: str) -> list[tuple[Table, ForeignKey]]:
        return [(t, fk) for t in self.tables.values() for fk in t.foreign_keys if fk.ref_table == table]


def _unique_params(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names):
        slug = slugify(name) or f"col_{i}"
        if slug[0].isdigit():
            slug = f"c_{slug}"
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}_{seen[slug]}"
        seen.setdefault(slug, 0)
        out.append(slug)
    return out


# Virtual tables (FTS3/4/5, R*Tree, ...) keep their data in shadow tables named `<vtab>_<suffix>`
# (fts5: _data _idx _content _docsize _config; fts4: _content _segments _segdir _docsize _stat;
# rtree: _node _parent _rowid). Neither is a domain table; a table of the database that merely
# shares such a prefix is skipped with the same reason (the module is not always loaded to tell).
VIRTUAL = re.compile(r"\s*CREATE\s+VIRTUAL\s+TABLE\b", re.IGNORECASE)


def introspect(conn: sqlite3.Connection) -> Schema:
    """Read every usable table; record why anything else was skipped."""
    skipped: dict[str, str] = {}
    tables: dict[str, Table] = {}
    objects = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name").fetchall()
    virtual = [name for kind, name, sql in objects if kind == "table" and VIRTUAL.match(sql or "")]
    for kind, name, sql in objects:
        if name.startswith("sqlite_"):
            continue
        if kind == "view":
            try:
                conn.execute(f"SELECT * FROM {quote_ident(name)} LIMIT 0")
                skipped[name] = "view: tools are derived from tables only"
            except sqlite3.Error as exc:
                skipped[name] = f"view fails to compile: {exc}"
            continue
        if name in virtual:
            skipped[name] = "virtual table: its module's storage is not a plain table"
            continue
        owner = next((v for v in virtual if name.startswith(f"{v}_")), None)
        if owner is not None:
            skipped[name] = f"shadow table of virtual table {owner}"
            continue
        try:
            table = _read_table(conn, name, sql or "")
        except sqlite3.Error as exc:
            skipped[name] = f"cannot read table: {exc}"
            continue
        if not table.columns:
            skipped[name] = "no usable columns"
            continue
        tables[name] = table
    for table in tables.values():
        kept = []
        for fk in table.foreign_keys:
            parent = tables.get(fk.ref_table)
            if parent is None:
                skipped[f"{table.name}.fk->{fk.ref_table}"] = "foreign key to a missing or unusable table"
                continue
            ref_cols = fk.ref_columns if all(fk.ref_columns) else tuple(c.name for c in parent.primary_key)
            if len(ref_cols) != len(fk.columns) or not all(_has_column(parent, c) for c in ref_cols) \
                    or not all(_has_column(table, c) for c in fk.columns):
                skipped[f"{table.name}.fk->{fk.ref_table}"] = "foreign key columns do not match"
                continue
            kept.append(ForeignKey(fk.columns, fk.ref_table, ref_cols))
        table.foreign_keys = kept
    return Schema(tables=tables, skipped=skipped)


def _has_column(table: Table, name: str) -> bool:
    return any(c.name == name for c in table.columns)


def _read_table(conn: sqlite3.Connection, name: str, sql: str) -> Table:
    q = quote_ident(name)
    info = conn.execute(f"PRAGMA table_xinfo({q})").fetchall()  # cid, name, type, notnull, dflt, pk, hidden
    visible = [row for row in info if row[6] == 0]
    params = _unique_params([row[1] for row in visible])
    unique_cols = set()
    for _seq, index, is_unique, *_ in conn.execute(f"PRAGMA index_list({q})").fetchall():
        cols = conn.execute(f"PRAGMA index_info({quote_ident(index)})").fetchall()
        if is_unique and len(cols) == 1:
            unique_cols.add(cols[0][2])
    columns, skipped_cols = [], {}
    for row, param in zip(visible, params):
        aff = affinity(row[2])
        if aff == "blob" and (row[2] or "").upper().find("BLOB") >= 0:
            skipped_cols[row[1]] = "BLOB column: binary data is not exposed to tools"
            continue
        columns.append(Column(name=row[1], param=param, declared_type=row[2] or "", affinity=aff,
                              notnull=bool(row[3]), has_default=row[4] is not None, pk_index=row[5],
                              unique=row[1] in unique_cols))
    fk_rows = conn.execute(f"PRAGMA foreign_key_list({q})").fetchall()  # id, seq, table, from, to, ...
    grouped: dict[int, list] = {}
    for fk_row in fk_rows:
        grouped.setdefault(fk_row[0], []).append(fk_row)
    fks = []
    for rows in grouped.values():
        rows.sort(key=lambda r: r[1])
        fks.append(ForeignKey(tuple(r[3] for r in rows), rows[0][2], tuple(r[4] for r in rows)))
    count = conn.execute(f"SELECT COUNT(*) FROM {q}").fetchone()[0]
    without_rowid = bool(re.search(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", sql, re.IGNORECASE))
    return Table(name=name, slug=slugify(name) or "table", columns=columns, foreign_keys=fks, row_count=count,
                 without_rowid=without_rowid, skipped_columns=skipped_cols)
