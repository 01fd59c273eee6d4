"""Bring-your-own SQLite databases: virtual tables stay out of the domain, the source directory gets no
new files (WAL sources included), and a pristine copy is reused only for the source it was made from."""

import shutil
import sqlite3

import pytest
from conftest import make_cfg
from toolturn.core.domains import prepare_domain
from toolturn.core.errors import ToolturnError
from toolturn.core.sqlenv import SqlDomain, SqlTool


def cfg(path, name="byo"):
    return make_cfg("domain=sqlite", f"domain.path='{path}'", f"domain.name={name}").domain


def snapshot(folder):
    """Every file in `folder` with its bytes: what a read-only import must leave exactly as it was."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_virtual_tables_and_their_shadow_tables_are_skipped(tmp_path):
    src = tmp_path / "src" / "search.db"
    src.parent.mkdir()
    conn = sqlite3.connect(src)
    conn.executescript("""
        CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT);
        CREATE VIRTUAL TABLE docs_fts USING fts5(title, body, content='docs', content_rowid='id');
        CREATE TRIGGER docs_ai AFTER INSERT ON docs BEGIN
            INSERT INTO docs_fts(rowid, title, body) VALUES (new.id, new.title, new.body); END;
        CREATE VIRTUAL TABLE notes USING fts5(text);
        CREATE VIRTUAL TABLE legacy USING fts4(x);
        CREATE VIRTUAL TABLE places USING rtree(id, min_x, max_x);
        INSERT INTO docs (title, body) VALUES ('hello', 'world'), ('second', 'text');
        INSERT INTO notes VALUES ('a note'); INSERT INTO legacy VALUES ('old'); INSERT INTO places VALUES (1, 0, 1);
    """)
    conn.commit()
    shadows = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE "
                                          "'CREATE VIRTUAL%' AND name != 'docs'")}
    conn.close()
    assert {"docs_fts_data", "docs_fts_idx", "docs_fts_docsize", "docs_fts_config", "notes_content",
            "legacy_segments", "legacy_segdir", "places_node", "places_parent", "places_rowid"} <= shadows
    d = prepare_domain(cfg(src), tmp_path / "run", 0)
    assert list(d.schema.tables) == ["docs"]
    assert {t.table for t in d.tools} == {"docs"}
    for vtab in ("docs_fts", "notes", "legacy", "places"):
        assert d.skipped[vtab].startswith("virtual table")
    for shadow in shadows:
        assert d.skipped[shadow].startswith("shadow table of virtual table")
        assert shadow not in d.schema_sql
    assert d.env.open_sandbox().call("search_docs", {"title": "hell"}).value[0]["body"] == "world"
    peeks = [SqlTool(f"peek_{i}", "d", {"type": "object", "properties": {}}, f'SELECT * FROM "{name}"', "read",
                     "rows", name) for i, name in enumerate(sorted(shadows | {"docs_fts"}))]
    sandbox = SqlDomain(d.db_path, peeks, d.env.tables).open_sandbox()
    for peek in peeks:  # and no tool can reach them
        result = sandbox.call(peek.name, {})
        assert not result.ok and ("not permitted" in result.content or "vtable constructor failed" in result.content)


def wal_source(folder):
    """A WAL database whose last committed rows are only in its -wal file (the writer died before a
    checkpoint): copied aside while the writer still holds it."""
    live = folder.parent / "live"
    live.mkdir()
    conn = sqlite3.connect(live / "shop.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table is in the main file ...
    conn.executemany("INSERT INTO items (name) VALUES (?)", [("in-wal-1",), ("in-wal-2",)])  # ... rows in -wal
    folder.mkdir()
    for f in ("shop.db", "shop.db-wal"):
        shutil.copyfile(live / f, folder / f)
    conn.close()
    return folder / "shop.db"


def test_wal_source_gets_no_new_files_and_its_committed_rows_are_read(tmp_path):
    src = wal_source(tmp_path / "src")
    assert (tmp_path / "src" / "shop.db-wal").stat().st_size > 0
    before = snapshot(src.parent)
    d = prepare_domain(cfg(src), tmp_path / "run", 0)
    assert snapshot(src.parent) == before  # no -shm, no checkpoint, not a byte changed
    rows = d.env.open_sandbox().call("search_items", {}).value
    assert [r["name"] for r in rows] == ["in-wal-1", "in-wal-2"]  # what any reader of the source sees
    run_files = {p.name for p in (tmp_path / "run" / "domains" / "byo").iterdir()}
    assert not any(n.endswith(("-wal", "-shm", "-journal")) for n in run_files)
    d.env.open_sandbox().close()
    assert snapshot(src.parent) == before


def test_checkpointed_wal_source_and_odd_path_get_no_new_files(tmp_path):
    folder = tmp_path / "we?ird #dir%20"
    folder.mkdir()
    src = folder / "clean.db"
    conn = sqlite3.connect(src)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('x');")
    conn.close()  # the last connection checkpoints and removes -wal and -shm
    before = snapshot(folder)
    assert list(before) == ["clean.db"]
    d = prepare_domain(cfg(src), tmp_path / "run", 0)
    assert d.env.open_sandbox().call("get_t", {"id": 1}).value == {"id": 1, "v": "x"}
    assert snapshot(folder) == before


def test_failed_setup_leaves_no_cached_copy(tmp_path):
    src = tmp_path / "src.db"
    conn = sqlite3.connect(src)
    conn.executescript("CREATE TABLE t (a); CREATE VIEW v AS SELECT * FROM t; DROP TABLE t;")  # nothing usable
    conn.close()
    with pytest.raises(ToolturnError, match="no usable table"):
        prepare_domain(cfg(src), tmp_path / "run", 0)
    assert list((tmp_path / "run" / "domains" / "byo").iterdir()) == []
    conn = sqlite3.connect(src)
    conn.executescript("CREATE TABLE fixed (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO fixed VALUES (1, 'ok');")
    conn.close()
    d = prepare_domain(cfg(src), tmp_path / "run", 0)  # the fixed source, not a stale copy
    assert list(d.schema.tables) == ["fixed"]


def test_cached_copy_is_reused_only_for_the_same_source(tmp_path):
    src = tmp_path / "src.db"
    conn = sqlite3.connect(src)
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('one');")
    conn.close()
    run = tmp_path / "run"
    pristine = run / "domains" / "byo" / "db.sqlite"
    prepare_domain(cfg(src), run, 0)
    made = pristine.stat().st_mtime_ns
    prepare_domain(cfg(src), run, 0)  # a resume: same source, the copy is kept
    assert pristine.stat().st_mtime_ns == made
    conn = sqlite3.connect(src)
    conn.execute("INSERT INTO t (v) VALUES ('two')")
    conn.commit()
    conn.close()
    with pytest.raises(ToolturnError, match="made from a different source.*delete"):
        prepare_domain(cfg(src), run, 0)
    other = tmp_path / "other.db"
    shutil.copyfile(src, other)
    with pytest.raises(ToolturnError, match="made from a different source"):
        prepare_domain(cfg(other), run, 0)
    (run / "domains" / "byo" / "source.json").unlink()  # a set-up killed between copy and record: rebuilt
    d = prepare_domain(cfg(src), run, 0)
    assert [r["v"] for r in d.env.open_sandbox().call("search_ts", {}).value] == ["one", "two"]


def test_builtin_copy_records_its_seed(tmp_path):
    prepare_domain(make_cfg("domain=retail").domain, tmp_path, seed=1)
    with pytest.raises(ToolturnError, match="recorded seed 1, now 2"):
        prepare_domain(make_cfg("domain=retail").domain, tmp_path, seed=2)


def test_hot_journal_is_applied_to_a_private_copy(tmp_path):
    """A rollback-journal source with a hot journal (a writer died mid-transaction): a normal reader
    would roll it back, writing the source; the import rolls back a private copy instead."""
    live = tmp_path / "live.db"
    conn = sqlite3.connect(live, isolation_level=None)
    conn.executescript("PRAGMA journal_mode = DELETE; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); "
                       "INSERT INTO t (v) VALUES ('committed');")
    conn.execute("PRAGMA cache_size = 1")  # spill the uncommitted change into the main file
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("uncommitted " * 50,)] * 2000)
    folder = tmp_path / "src"
    folder.mkdir()
    journal = live.with_name("live.db-journal")
    assert journal.exists()
    shutil.copyfile(live, folder / "live.db")
    shutil.copyfile(journal, folder / "live.db-journal")
    conn.execute("ROLLBACK")
    conn.close()
    before = snapshot(folder)
    d = prepare_domain(cfg(folder / "live.db"), tmp_path / "run", 0)
    assert [r["v"] for r in d.env.open_sandbox().call("search_ts", {}).value] == ["committed"]
    assert snapshot(folder) == before
