"""Whatever a tool call carries, it ends as a tool error and the sandbox stays clean: values SQLite or
JSON cannot hold, odd names and specs, transaction control, oversized results and runaway operations."""

import asyncio
import json
import math
import threading

import pytest
from toolturn.core.episode import AssistantTurn, EpisodeError, EpisodeState, UserTurn, run_episode
from toolturn.core.errors import ToolCallError
from toolturn.core.sqlenv import FETCH_ROWS, SqlDomain, SqlTool, ToolResult, check_parameters, error_result
from toolturn.generate.sqlcheck import Rejected, check_sql_tool


def tool(sql, props=None, effect="read", returns="rows", name="t"):
    return SqlTool(name, "hand-written", {"type": "object", "properties": props or {}, "required": []}, sql,
                   effect, returns, "customers")


def domain_with(retail, *tools, **kw) -> SqlDomain:
    """The given tools plus get_customer, which `assert_clean_error` calls to see that the sandbox still works."""
    get = retail.env.tools["get_customer"]
    return SqlDomain(retail.db_path, [*tools, get], retail.env.tables, time_limit_s=kw.pop("time_limit_s", 0.2), **kw)


def assert_clean_error(sandbox, result, before, needle):
    """A failed call: an error message, no open transaction, state unchanged, the next call works."""
    assert not result.ok and result.value is None
    assert needle in json.loads(result.content)["error"]
    result.content.encode("utf-8")
    assert not sandbox.conn.in_transaction
    assert sandbox.state_hash() == before
    assert sandbox.call("get_customer", {"id": 1}).ok


@pytest.mark.parametrize("name, args, needle", [
    ("get_customer", {"id": 2 ** 63}, "outside the signed 64-bit range"),
    ("get_customer", {"id": -(2 ** 63) - 1}, "outside the signed 64-bit range"),
    ("get_customer", {"id": 10 ** 5000}, "outside the signed 64-bit range"),  # str() of it would raise
    ("search_orders", {"total": math.nan}, "non-finite number"),
    ("search_orders", {"total": math.inf}, "non-finite number"),
    ("update_order", {"id": 1, "total": -math.inf}, "non-finite number"),
    ("search_customers", {"email": "a\ud800b"}, "not valid UTF-8"),
    ("search_customers", {"email": "\udcff"}, "not valid UTF-8"),
    ("search_customers", {"email": ["x", {"y": 2 ** 70}]}, "outside the signed 64-bit range"),  # nested
    ("search_customers", {"email": {"k": [math.nan]}}, "non-finite number"),
    ("search_customers", {"email": {1: "x"}}, "key that is not a string"),
    ("search_customers", {"email": b"bytes"}, "not a JSON value"),
    ("get_customer", [1], "must be a JSON object"),
    ("get_customer", None, "must be a JSON object"),
    ("get_customer", "{\"id\": 1}", "must be a JSON object"),
    ("get_customer", {1: 1, "id": 1}, "argument names for get_customer must be strings"),
    ("get_customer", {"\ud800": 1}, "unknown argument"),
    ("no_such_\ud800tool", {}, "unknown tool"),
    (123, {}, "tool name must be a string, got int"),
    (None, {}, "tool name must be a string, got NoneType"),
    ({"a": 1}, {}, "tool name must be a string, got dict"),
])
def test_any_argument_ends_as_a_tool_error(retail, name, args, needle):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call(name, args), before, needle)


def test_untyped_parameter_and_default_are_checked_too(retail):
    untyped = tool("SELECT :v AS v", {"v": {"description": "any"}})
    big_default = tool("SELECT :v AS v", {"v": {"type": "integer", "default": 2 ** 64}}, name="d")
    sandbox = domain_with(retail, untyped, big_default).open_sandbox()
    before = sandbox.state_hash()
    assert sandbox.call("t", {"v": 2 ** 63 - 1}).value == [{"v": 2 ** 63 - 1}]
    assert_clean_error(sandbox, sandbox.call("t", {"v": 2 ** 63}), before, "64-bit range")
    assert_clean_error(sandbox, sandbox.call("t", {"v": [1]}), before, "not supported")  # no list binds
    assert_clean_error(sandbox, sandbox.call("d", {}), before, "malformed parameter spec")


@pytest.mark.parametrize("parameters", [
    None, [], "object", {"properties": []}, {"properties": {"a": "integer"}}, {"properties": {"a": None}},
    {"properties": {"a": {"type": 5}}}, {"properties": {"a": {"type": ["integer", None]}}},
    {"properties": {"a": {"type": "integer", "minimum": "1"}}},
    {"properties": {"a": {"type": "integer", "maximum": [10]}}},
    {"properties": {"a": {"type": "integer", "minimum": math.nan}}},
    {"properties": {"a": {"type": "integer", "minimum": True}}},
    {"properties": {"a": {"type": "string", "enum": "abc"}}}, {"properties": {"a": {"type": "string", "enum": 3}}},
    {"properties": {"a": {"type": "string", "enum": [math.inf]}}},
    {"properties": {"a": {"type": "integer"}}, "required": "a"},
    {"properties": {"a": {"type": "integer"}}, "required": [["a"]]},
    {"properties": {1: {"type": "integer"}}},
])
def test_malformed_parameter_specs_are_tool_errors(retail, parameters):
    with pytest.raises(ToolCallError, match="malformed parameter spec"):
        check_parameters("odd", parameters, {"a": 1})
    odd = SqlTool("odd", "from a run dir", parameters, "SELECT 1 AS one", "read", "rows", "customers")
    sandbox = domain_with(retail, odd).open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("odd", {"a": 1}), before, "malformed parameter spec")


def test_well_formed_specs_still_work():
    spec = {"type": "object", "properties": {"a": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
                                             "b": {"type": "array"}, "c": {"type": "date"}}, "required": ["a"]}
    assert check_parameters("ok", spec, {"a": 3, "b": [1], "c": "2024-01-01"}) == {"a": 3, "b": [1], "c": "2024-01-01"}
    with pytest.raises(ToolCallError, match="between 0 and 5"):
        check_parameters("ok", spec, {"a": 6})
    with pytest.raises(ToolCallError, match="must be of type array"):
        check_parameters("ok", spec, {"a": 1, "b": "x"})


@pytest.mark.parametrize("sql", ["COMMIT", "END", "BEGIN", "BEGIN IMMEDIATE", "ROLLBACK", "SAVEPOINT s",
                                 "RELEASE tool_call", "RELEASE SAVEPOINT tool_call", "ROLLBACK TO tool_call"])
def test_transaction_control_inside_a_tool_is_denied(retail, sql):
    write = tool("UPDATE customers SET first_name = 'Changed' WHERE id = 1", effect="write", name="w")
    sandbox = domain_with(retail, tool(sql), write).open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("t", {}), before, "not permitted")
    with pytest.raises(RuntimeError), sandbox.attempt():  # the attempt's rollback still covers its writes
        assert sandbox.call("w", {}).ok
        assert not sandbox.call("t", {}).ok
        raise RuntimeError
    assert sandbox.state_hash() == before and not sandbox.conn.in_transaction


def test_authorization_does_not_leak_through_the_statement_cache(retail):
    sql = "UPDATE customers SET first_name = 'Changed' WHERE id = 1"
    sandbox = domain_with(retail, tool(sql, effect="write", name="w"), tool(sql, name="r"),
                          tool("SAVEPOINT tool_call", name="s")).open_sandbox()
    assert sandbox.call("w", {}).ok
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("r", {}), before, "not permitted")  # same text, read tool
    assert_clean_error(sandbox, sandbox.call("s", {}), before, "not permitted")  # the sandbox's own statement


@pytest.mark.parametrize("sql", ["SELECT 1e999 AS x", "SELECT -1e999 AS x", "SELECT 9e307 * 10 AS x"])
def test_non_finite_results_are_refused(retail, sql):
    sandbox = domain_with(retail, tool(sql)).open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("t", {}), before, "cannot be encoded as JSON")


def test_result_cap_streams_and_matches_one_serialization(retail):
    every = tool("SELECT * FROM orders ORDER BY id")
    n_orders = retail.env.open_sandbox().conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    assert n_orders > 2 * FETCH_ROWS  # several chunks
    big = domain_with(retail, every, max_result_bytes=10 ** 8).open_sandbox().call("t", {})
    assert big.ok and big.content == json.dumps(big.value, ensure_ascii=False) and len(big.value) == n_orders
    size = len(big.content.encode())
    exact = domain_with(retail, every, max_result_bytes=size).open_sandbox().call("t", {})
    assert exact.ok and exact.content == big.content
    small = domain_with(retail, every, max_result_bytes=size - 1).open_sandbox()
    before = small.state_hash()
    assert_clean_error(small, small.call("t", {}), before, f"exceeds the limit of {size - 1} bytes")


def test_a_write_whose_result_is_too_large_is_rolled_back(retail):
    write = tool("UPDATE orders SET status = 'cancelled' RETURNING *", effect="write")
    sandbox = domain_with(retail, write, max_result_bytes=4096).open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("t", {}), before, "exceeds the limit of 4096 bytes")


@pytest.mark.parametrize("sql", [
    "SELECT replace(zeroblob(500000000), x'00', 'ab') AS s",
    "SELECT length(printf('%.*c', 500000000, 'x')) AS n",  # SQLite's own would loop, then give NULL
    "SELECT length(printf('%.*c', 70000, 'x')) AS n",
    "SELECT length(format('%.*c%.*c', 40000, 'x', 40000, 'y')) AS n",  # each part fits, the result does not
    "SELECT length(printf('%*d', 70000, 1)) AS n",
    "SELECT length(randomblob(500000000)) AS n",
    "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) AS n FROM r",
    "SELECT group_concat(c.email || d.email) AS s FROM customers c, customers d",
])
def test_one_operation_cannot_build_a_huge_value(retail, sql):
    sandbox = domain_with(retail, tool(sql), time_limit_s=10).open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("t", {}), before, "exceeds the limit of 65536 bytes")  # never a NULL


def test_time_limit_holds_inside_one_long_select(retail):
    sandbox = domain_with(retail, tool("SELECT COUNT(*) AS n FROM customers a, customers b, customers c, customers d")
                          ).open_sandbox()
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.call("t", {}), before, "time limit of 0.2 s")


def test_admitted_tool_with_a_small_dry_run_is_capped_at_call_time(retail):
    candidate = {"name": "pairs", "description": "d", "sql": "SELECT c.email, d.email AS other FROM customers c, "
                 "customers d WHERE c.id < :k", "parameters": {"type": "object", "properties": {"k": {"type": "integer"}}}}
    sandbox = retail.env.open_sandbox()
    admitted = check_sql_tool(candidate, retail.schema, sandbox, taken=set())  # dry run: k=1, no rows
    before = sandbox.state_hash()
    assert_clean_error(sandbox, sandbox.run(admitted, {"k": 10 ** 6}), before, "exceeds the limit of 65536 bytes")


def test_an_admitted_tool_may_call_bounded_deterministic_functions(retail):
    sql = ("SELECT upper(c.email) AS e, count(*) AS n, round(avg(o.total), 2) AS t, substr(c.last_name, 1, 3) AS s "
           "FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = :a GROUP BY c.id")
    admitted = check_sql_tool(sql_candidate(sql), retail.schema, retail.env.open_sandbox(), taken=set())
    assert admitted.sql == sql


def sql_candidate(sql="SELECT id FROM orders WHERE id = :a", parameters=None):
    return {"name": "my_tool", "description": "d", "sql": sql,
            "parameters": parameters if parameters is not None else
            {"type": "object", "properties": {"a": {"type": "integer"}}}}


@pytest.mark.parametrize("cand, reason", [
    *[(sql_candidate(sql), "transaction_control") for sql in
      ("COMMIT", "begin transaction", "END", "ROLLBACK", "ROLLBACK TO s", "SAVEPOINT s", "RELEASE s",
       "/* hidden */ commit", "SELECT 1; COMMIT")],
    (sql_candidate(parameters=[]), "malformed"),
    (sql_candidate(parameters="object"), "malformed"),
    (sql_candidate(parameters={"type": "object", "properties": []}), "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": "integer"}}), "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": ["integer"]}}}), "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": {"x": 1}}}}), "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer", "minimum": "0"}}}),
     "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer", "maximum": None}}}),
     "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer", "enum": 7}}}),
     "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer", "enum": ["x"]}}}),
     "bad_parameters"),  # the sample value fails the declared type
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer"}}, "required": "a"}),
     "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer"}}, "required": [{}]}),
     "bad_parameters"),
    (sql_candidate(parameters={"type": "object", "properties": {"a": [{"type": "integer"}]}}), "bad_parameters"),
    (sql_candidate(sql="SELECT id FROM orders WHERE id = :a AND '\ud800' = ''"), "malformed"),
    (sql_candidate(sql="SELECT id FROM orders WHERE id = :a\0"), "malformed"),
    ({**sql_candidate(), "description": {"no": "text"}}, "malformed"),
    ({**sql_candidate(), "name": 10 ** 5000}, "bad_name"),
    (sql_candidate(sql="SELECT c.email, c.first_name, o.status FROM customers c, orders o WHERE o.id >= :a"),
     "dry_run_error"),  # over the result cap
    # the printf bomb: admitted only if it called nothing but bounded, deterministic functions
    (sql_candidate(sql="SELECT id, printf('%.*c', :a, 'x') AS pad FROM customers LIMIT 1"), "forbidden_function"),
    (sql_candidate(sql="SELECT id, FORMAT('%d', id) AS f FROM orders WHERE id = :a"), "forbidden_function"),
    (sql_candidate(sql="SELECT id, random() AS r FROM orders WHERE id = :a"), "forbidden_function"),
    (sql_candidate(sql="SELECT length(zeroblob(:a)) AS n"), "forbidden_function"),
    (sql_candidate(sql="SELECT id, last_insert_rowid() AS r FROM orders WHERE id = :a"), "forbidden_function"),
])
def test_sqlcheck_rejects_never_crashes(retail, cand, reason):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    with pytest.raises(Rejected) as err:
        check_sql_tool(cand, retail.schema, sandbox, taken=set())
    assert err.value.reason == reason
    assert sandbox.state_hash() == before and not sandbox.conn.in_transaction


def test_sqlcheck_samples_within_declared_bounds(retail):
    cand = sql_candidate(parameters={"type": "object", "properties": {"a": {"type": "integer", "minimum": 5}}})
    admitted = check_sql_tool(cand, retail.schema, retail.env.open_sandbox(), taken=set())
    assert admitted.parameters["properties"]["a"]["minimum"] == 5


# ---- through the episode loop ------------------------------------------------------------------

class ScriptedUser:
    def __init__(self, rounds):
        self.rounds = rounds

    async def respond(self, state):
        self.rounds -= 1
        return UserTurn("please help", done=self.rounds < 0)


class ScriptedAssistant:
    """Sends each of `calls` once, then answers in text."""

    def __init__(self, calls, text="done"):
        self.calls, self.text = list(calls), text

    async def respond(self, state):
        if self.calls:
            return AssistantTurn("", tool_calls=[self.calls.pop(0)])
        return AssistantTurn(self.text)


def episode(executor, calls, text="done", **kw):
    state = EpisodeState(messages=[{"role": "system", "content": "s"}], tools=[], start=1)
    asyncio.run(run_episode(state, ScriptedUser(1), ScriptedAssistant(calls, text), executor, **kw))
    return state


class BlockingExecutor:
    """A synchronous executor whose call returns only once `released` is set by a coroutine of the same event
    loop: the episode completes only if calls run off the loop (were it blocked, nothing would set it)."""

    def __init__(self):
        self.started, self.released = threading.Event(), threading.Event()

    def call(self, name, arguments):
        self.started.set()
        ok = self.released.wait(timeout=120)  # a guard against a hang, not a timing assumption
        return error_result("the event loop was blocked") if not ok else ToolResult('{"ok": true}', True, {"ok": True})


def test_a_tool_call_never_blocks_the_event_loop():
    executor = BlockingExecutor()

    async def both():
        state = EpisodeState(messages=[{"role": "system", "content": "s"}], tools=[], start=1)
        episode = asyncio.create_task(run_episode(state, ScriptedUser(1), ScriptedAssistant(
            [{"name": "slow", "arguments": {}}]), executor))
        await asyncio.to_thread(executor.started.wait, 120)  # the episode's call has started
        executor.released.set()  # runs only if that call left the loop free
        await episode
        return state

    state = asyncio.run(both())
    assert [m["content"] for m in state.messages if m["role"] == "tool"] == ['{"ok": true}']


def test_non_string_tool_names_are_recorded_as_strings(retail):
    sandbox = retail.env.open_sandbox()
    calls = [{"name": 123, "arguments": {}}, {"name": None, "arguments": {}}, {"name": {"a": 1}, "arguments": {}},
             {"name": "get_customer", "arguments": [1]}, {"name": "get_customer"}, {"name": "get_customer",
                                                                                   "arguments": {"id": 2 ** 64}}]
    state = episode(sandbox, calls)
    tool_messages = [m for m in state.messages if m["role"] == "tool"]
    names = [c["function"]["name"] for m in state.messages for c in m.get("tool_calls", [])]
    assert names == ["123", "None", "{'a': 1}", "get_customer", "get_customer", "get_customer"]
    assert [m["name"] for m in tool_messages] == names
    assert state.tool_errors == 6 and all("error" in json.loads(m["content"]) for m in tool_messages)
    assert "unknown tool '123'" in tool_messages[0]["content"]
    # what is recorded is what runs: a replay (as the audit does) gives the same bytes
    replay = retail.env.open_sandbox()
    for m in state.messages:
        for c in m.get("tool_calls", []):
            out = next(t for t in tool_messages if t["tool_call_id"] == c["id"])
            assert replay.call(c["function"]["name"], c["function"]["arguments"]).content == out["content"]
    json.dumps(state.messages, allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("call, text", [({"name": "search_orders", "arguments": {"total": math.nan}}, "done"),
                                        ({"name": "get_customer", "arguments": {"id": 1}}, "lone \ud800 text")])
def test_a_message_that_cannot_be_recorded_is_a_counted_drop(retail, call, text):
    with pytest.raises(EpisodeError) as err:
        episode(retail.env.open_sandbox(), [call], text=text)
    assert err.value.reason == "unencodable_message"


def test_dialogue_byte_cap_is_a_counted_drop(retail):
    calls = [{"name": "search_orders", "arguments": {"max_results": 50}}] * 5
    state = episode(retail.env.open_sandbox(), calls)  # fits the default cap
    assert state.bytes == sum(len(json.dumps(m, ensure_ascii=False).encode()) for m in state.messages)
    with pytest.raises(EpisodeError) as err:
        episode(retail.env.open_sandbox(), calls, max_dialogue_bytes=state.bytes - 1)
    assert err.value.reason == "dialogue_too_large"
    assert episode(retail.env.open_sandbox(), calls, max_dialogue_bytes=state.bytes).bytes == state.bytes
