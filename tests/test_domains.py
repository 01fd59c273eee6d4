"""Built-in domains, import of real-world SQLite files, and the tools derived from their schemas."""

import re
import sqlite3

import pytest
from conftest import make_cfg, sha256
from toolturn.core.domains import BUILTIN, prepare_domain
from toolturn.core.domains.databases import sqlite_source
from toolturn.core.domains.registry import REGISTRY, Registry
from toolturn.core.errors import ToolturnError


def table_dump(path):
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_domain_is_deterministic_and_relational(name, tmp_path):
    a = prepare_domain(make_cfg(f"domain={name}").domain, tmp_path / "a", seed=3)
    b = prepare_domain(make_cfg(f"domain={name}").domain, tmp_path / "b", seed=3)
    c = prepare_domain(make_cfg(f"domain={name}").domain, tmp_path / "c", seed=4)
    assert table_dump(a.db_path) == table_dump(b.db_path)
    assert table_dump(a.db_path) != table_dump(c.db_path)
    assert len(a.schema.tables) >= 5
    assert sum(t.row_count for t in a.schema.tables.values()) >= 500
    assert sum(len(t.foreign_keys) for t in a.schema.tables.values()) >= 4
    assert sqlite3.connect(a.db_path).execute("PRAGMA foreign_key_check").fetchall() == []


def test_tools_are_typed_named_and_cover_every_kind(retail):
    names = {t.name for t in retail.tools}
    for expected in ("get_customer", "search_customers", "list_orders_for_customer", "summarize_orders_by_status",
                     "create_order", "update_order", "delete_order"):
        assert expected in names
    for tool in retail.tools:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", tool.name)
        crud_write = tool.name.split("_")[0] in ("create", "update", "delete")
        assert tool.effect == ("write" if crud_write or tool.statements else "read")  # domain actions write by statements
        assert tool.description and tool.parameters["type"] == "object"
        for p, spec in tool.parameters["properties"].items():
            assert re.fullmatch(r"[a-z][a-z0-9_]*", p) and spec["type"] in ("integer", "number", "string")
    status = next(t for t in retail.tools if t.name == "search_orders").parameters["properties"]["status"]
    assert set(status["enum"]) >= {"pending", "shipped"}


def test_quirky_database_imports_with_logged_skips(sample_dbs, tmp_path):
    digest = sha256(sample_dbs["quirky"])
    cfg = make_cfg("domain=sqlite", f"domain.path={sample_dbs['quirky']}", "domain.name=quirky").domain
    d = prepare_domain(cfg, tmp_path, seed=0)
    names = {t.name for t in d.tools}
    assert "get_order_detail" in names and "search_orders" in names  # 'Order Details' and "order"
    assert "list_employees_by_manager_id" in names  # self-referencing foreign key
    assert "list_grades_for_enrollment" in names  # composite foreign key
    grade_fk = next(t for t in d.tools if t.name == "list_grades_for_enrollment")
    assert set(grade_fk.parameters["required"]) == {"student_id", "course_id"}
    contacts = next(t for t in d.tools if t.name == "get_contacts_intl")
    assert {"prenom", "strasse"} <= set(next(t for t in d.tools if t.name == "create_contacts_intl")
                                         .parameters["properties"])
    assert contacts.parameters["required"] == ["id"]
    assert "broken_view" in d.skipped and "compile" in d.skipped["broken_view"]
    assert "no primary key" in d.skipped["event_log:get/create/update/delete"]
    assert "BLOB" in d.skipped["photos.data"]
    assert "search_event_logs" in names  # a table without a key is still searchable
    assert "create_audit_trail" in names  # an empty table still gets tools
    sandbox = d.env.open_sandbox()
    row = sandbox.call("get_contacts_intl", {"id": 1})
    assert row.ok and "strasse" in row.value
    assert sandbox.call("list_employees_by_manager_id", {"manager_id": 1}).ok
    assert sha256(sample_dbs["quirky"]) == digest


def test_bad_databases_get_clear_errors(tmp_path):
    cfg = lambda p: make_cfg("domain=sqlite", f"domain.path={p}").domain  # noqa: E731
    with pytest.raises(ToolturnError, match="not found"):
        prepare_domain(cfg(tmp_path / "nope.sqlite"), tmp_path / "r1", 0)
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ToolturnError, match="cannot read SQLite database"):
        prepare_domain(cfg(corrupt), tmp_path / "r2", 0)
    only_view = tmp_path / "view.sqlite"
    conn = sqlite3.connect(only_view)
    conn.executescript("CREATE TABLE t(a); CREATE VIEW v AS SELECT * FROM t; DROP TABLE t;")
    conn.close()
    with pytest.raises(ToolturnError, match="no usable table"):
        prepare_domain(cfg(only_view), tmp_path / "r3", 0)
    with pytest.raises(ToolturnError, match="unknown built-in domain"):
        prepare_domain(make_cfg("domain=retail", "domain.name=mars").domain, tmp_path / "r4", 0)
    with pytest.raises(ToolturnError, match=r"unknown domain kind 'csv' \(expected builtin, sqlite or tau2\)"):
        prepare_domain(make_cfg("domain=sqlite", "domain.kind=csv").domain, tmp_path / "r5", 0)


def test_the_registry_refuses_a_name_twice():
    registry = Registry()
    registry.add_domain(REGISTRY.domain("retail"))
    with pytest.raises(ToolturnError, match="built-in domain 'retail' is registered twice"):
        registry.add_domain(REGISTRY.domain("retail"))
    registry.add_kind("sqlite", sqlite_source)
    for kind in ("sqlite", "builtin"):
        with pytest.raises(ToolturnError, match=f"domain kind '{kind}' is registered twice"):
            registry.add_kind(kind, sqlite_source)
    assert registry.names() == ("retail",)
