"""The SQL sandbox: bound arguments, type checks, authorizer, time bound, isolation."""

import asyncio
import json
import threading

import pytest
from conftest import sha256
from toolturn.core import sqlenv
from toolturn.core.episode import execute
from toolturn.core.sqlenv import SqlDomain, SqlTool, ToolCallError


def first_customer(domain):
    return domain.env.open_sandbox().conn.execute("SELECT id, email FROM customers ORDER BY id LIMIT 1").fetchone()


@pytest.mark.parametrize("args, message", [
    ({"id": "'; DROP TABLE customers; --"}, "must be of type integer"),
    ({"id": 1, "extra": 2}, "unknown argument"),
    ({}, "missing required"),
    ({"id": True}, "must be of type integer"),
    ({"id": 1.5}, "must be of type integer"),
    ("id=1", "must be a JSON object"),
])
def test_get_rejects_bad_arguments(retail, args, message):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    result = sandbox.call("get_customer", args)
    assert not result.ok and message in json.loads(result.content)["error"]
    assert sandbox.state_hash() == before


@pytest.mark.parametrize("value", ["'; DROP TABLE customers; --", "x' OR '1'='1", "ATTACH DATABASE '/tmp/x' AS x",
                                   "%", "\"; PRAGMA writable_schema=1; --"])
def test_injection_strings_are_just_values(retail, value):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    counts = {t: sandbox.conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in retail.schema.tables}
    result = sandbox.call("search_customers", {"email": value})
    assert result.ok
    if value != "%":
        assert json.loads(result.content) == []
    update = sandbox.call("update_customer", {"id": 1, "first_name": value})
    assert update.ok and json.loads(update.content)["first_name"] == value  # stored verbatim, as data
    assert {t: sandbox.conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in counts} == counts
    other = retail.env.open_sandbox()
    assert other.state_hash() == before  # the write stayed in its own sandbox


def test_huge_string_unknown_tool_and_enum(retail):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    huge = sandbox.call("search_customers", {"email": "a" * 1_000_000})
    assert "too long" in json.loads(huge.content)["error"]
    unknown = sandbox.call("drop_everything", {})
    assert "unknown tool 'drop_everything'" in json.loads(unknown.content)["error"]
    enum = sandbox.call("search_customers", {"status": "evil"})
    assert "must be one of" in json.loads(enum.content)["error"]
    limit = sandbox.call("search_customers", {"max_results": 10_000})
    assert "between 1 and 50" in json.loads(limit.content)["error"]
    missing = sandbox.call("get_customer", {"id": 10 ** 9})
    assert "no customers record found" in json.loads(missing.content)["error"]
    assert sandbox.state_hash() == before


def evil_domain(retail, sql: str, effect: str = "read") -> SqlDomain:
    tool = SqlTool("evil", "hand-written", {"type": "object", "properties": {}, "required": []}, sql, effect,
                   "rows", "customers")
    return SqlDomain(retail.db_path, [tool], retail.env.tables, time_limit_s=0.2)


@pytest.mark.parametrize("sql", [
    "ATTACH DATABASE ':memory:' AS other",
    "PRAGMA writable_schema = 1",
    "DROP TABLE customers",
    "CREATE TABLE x (a)",
    "ALTER TABLE customers ADD COLUMN pwned TEXT",
    "SELECT sql FROM sqlite_master",
    "SELECT load_extension('/tmp/evil.so')",
    "DELETE FROM customers",  # a write from a read tool
])
def test_authorizer_denies_escapes(retail, sql):
    domain = evil_domain(retail, sql)
    sandbox = domain.open_sandbox()
    before = sandbox.state_hash()
    result = sandbox.call("evil", {})
    assert not result.ok and "not permitted" in json.loads(result.content)["error"]
    assert sandbox.state_hash() == before


def test_time_limit_interrupts_runaway_query(retail):
    domain = evil_domain(retail, "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                                 "SELECT COUNT(*) FROM r")
    result = domain.open_sandbox().call("evil", {})
    assert "time limit" in json.loads(result.content)["error"]


COUNT_TO = "(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 200000) SELECT COUNT(*) FROM r)"


def slow_write(retail, count_to: str, time_limit_s: float) -> SqlDomain:
    write = SqlTool("slow_write", "hand-written", {"type": "object", "properties": {}, "required": []},
                    "SELECT first_name FROM customers WHERE id = 1", "write", "row", "customers",
                    statements=(f"UPDATE customers SET first_name = 'Slow' || {count_to}",))
    fine = SqlTool("fine_write", "hand-written", {"type": "object", "properties": {}, "required": []},
                   "UPDATE customers SET first_name = 'Fine' WHERE id = 1", "write", "rows", "customers")
    return SqlDomain(retail.db_path, [write, fine], retail.env.tables, time_limit_s=time_limit_s)


def test_a_write_interrupted_at_the_time_limit_is_an_error_and_changes_nothing(retail):
    # SQLite rolls back the whole transaction of an interrupted UPDATE, the call's savepoint with it
    sandbox = slow_write(retail, "(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) "
                                 "FROM r)", 0.2).open_sandbox()
    before = sandbox.state_hash()
    for _ in range(2):
        result = sandbox.call("slow_write", {})
        assert "time limit of 0.2 s" in json.loads(result.content)["error"]
        assert sandbox.state_hash() == before and not sandbox.conn.in_transaction
    with pytest.raises(ToolCallError, match="rolled back the whole attempt"), sandbox.attempt():
        assert sandbox.call("fine_write", {}).ok
        assert not sandbox.call("slow_write", {}).ok
    assert sandbox.state_hash() == before and not sandbox.conn.in_transaction
    assert sandbox.call("fine_write", {}).ok and sandbox.state_hash() != before


def test_try_call_gives_what_call_gives(retail):
    inline, threaded = retail.env.open_sandbox(), retail.env.open_sandbox()
    cid, _ = first_customer(retail)
    for name, args in [("search_orders", {"status": "pending"}), ("update_customer", {"id": cid, "first_name": "Z"}),
                       ("get_customer", {"id": cid}), ("get_customer", {"id": "x"}), ("no_such_tool", {})]:
        quick = inline.try_call(name, args, budget_s=1.0)  # ample on any machine (these take well under 1 ms)
        assert quick is not None and quick == threaded.call(name, args)
    assert inline.state_hash() == threaded.state_hash()


def test_try_call_past_its_budget_changes_nothing_and_call_then_runs_it(retail):
    sandbox = slow_write(retail, COUNT_TO, 10).open_sandbox()
    before = sandbox.state_hash()
    # 1 us: the progress handler looks at the clock every 1,000 SQLite instructions, which take longer than that
    assert sandbox.try_call("slow_write", {}, budget_s=1e-6) is None
    assert sandbox.state_hash() == before and not sandbox.conn.in_transaction
    result = sandbox.call("slow_write", {})
    assert result.ok and result.value == {"first_name": "Slow200000"} and sandbox.state_hash() != before
    with sandbox.attempt():  # an attempt's writes are never put at risk of an interrupted inline write
        assert sandbox.try_call("fine_write", {}) is None


def test_try_call_with_a_budget_past_the_time_limit_is_the_time_limit(retail):
    domain = evil_domain(retail, "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                                 "SELECT COUNT(*) FROM r")
    result = domain.open_sandbox().try_call("evil", {}, budget_s=5)
    assert result is not None and "time limit of 0.2 s" in json.loads(result.content)["error"]


def test_the_episode_runs_a_quick_call_inline_and_a_long_one_in_a_worker_thread(retail, monkeypatch):
    sandbox = slow_write(retail, COUNT_TO, 10).open_sandbox()
    threads = []
    call = sandbox.call
    monkeypatch.setattr(sandbox, "call", lambda name, args: threads.append(threading.current_thread()) or call(name, args))
    monkeypatch.setattr(sqlenv, "INLINE_BUDGET_S", 1.0)  # ample on any machine: a one-row update
    assert asyncio.run(execute(sandbox, "fine_write", {})).ok and threads == []
    monkeypatch.setattr(sqlenv, "INLINE_BUDGET_S", 1e-6)  # under 1,000 SQLite instructions
    result = asyncio.run(execute(sandbox, "slow_write", {}))
    assert result.ok and result.value == {"first_name": "Slow200000"}
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


def test_failed_write_is_rolled_back(retail):
    domain = evil_domain(retail, "UPDATE customers SET email = 'dup@example.com'", effect="write")
    sandbox = domain.open_sandbox()
    before = sandbox.state_hash()
    result = sandbox.call("evil", {})  # violates UNIQUE(email) after the first row
    assert "UNIQUE constraint failed" in result.content
    assert sandbox.state_hash() == before


def test_sandboxes_are_isolated_and_the_file_is_untouched(retail):
    digest = sha256(retail.db_path)
    a, b = retail.env.open_sandbox(), retail.env.open_sandbox()
    cid, _ = first_customer(retail)
    assert a.call("update_customer", {"id": cid, "first_name": "Changed"}).ok
    assert json.loads(a.call("get_customer", {"id": cid}).content)["first_name"] == "Changed"
    assert json.loads(b.call("get_customer", {"id": cid}).content)["first_name"] != "Changed"
    assert a.state_hash() != b.state_hash()
    assert sha256(retail.db_path) == digest


def test_results_are_deterministic_json(retail):
    a, b = retail.env.open_sandbox(), retail.env.open_sandbox()
    for name, args in [("search_orders", {"status": "pending"}), ("summarize_orders_by_status", {})]:
        assert a.call(name, args).content == b.call(name, args).content


def test_incremental_state_hash_equals_a_full_recompute(retail):
    import hashlib

    from toolturn.core.sqlenv import table_hash

    def full(sandbox):
        h = hashlib.sha256()
        for t in retail.env.tables:
            h.update(table_hash(sandbox.conn, t).encode())
        return h.hexdigest()

    sandbox = retail.env.open_sandbox()
    assert sandbox.state_hash() == full(sandbox) and not sandbox.dirty
    cid, _ = first_customer(retail)
    assert sandbox.call("update_customer", {"id": cid, "first_name": "Zed"}).ok
    assert "customers" in sandbox.dirty and "orders" in sandbox.dirty  # children can change through FK actions
    assert sandbox.state_hash() == full(sandbox) != retail.env.open_sandbox().state_hash()


def test_closing_a_domain_under_a_copying_thread_is_an_error_not_a_crash(retail):
    """A run can end while a worker thread still copies the master (a policy check left in its executor);
    SQLite segfaults on a connection closed under a running backup. The thread gets a one-line error."""
    import threading

    from toolturn.core.errors import ToolturnError

    domain = SqlDomain(retail.db_path, [], retail.env.tables)
    copied, outcome = threading.Event(), []

    def copy_until_closed():
        try:
            while True:
                domain.open_sandbox().close()
                copied.set()
        except ToolturnError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=copy_until_closed)
    worker.start()
    assert copied.wait(timeout=600)
    domain.close()
    worker.join(timeout=600)
    assert outcome and "is closed" in outcome[0]
    domain.close()  # twice is harmless
