"""Admission checks for LLM-written SQL tools: every rejection has its reason, the database is untouched."""

import pytest
from toolturn.generate.sqlcheck import Rejected, check_sql_tool

NO_PARAMS = {"type": "object", "properties": {}}
ID_PARAM = {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}


def candidate(sql, params=NO_PARAMS, name="my_tool"):
    return {"name": name, "description": "d", "parameters": params, "sql": sql}


@pytest.mark.parametrize("cand, reason", [
    (candidate("SELECT 1; DROP TABLE orders"), "not_one_statement"),
    (candidate("DROP TABLE orders"), "forbidden_statement"),
    (candidate("ATTACH DATABASE 'x' AS y"), "forbidden_statement"),
    (candidate("PRAGMA writable_schema = 1"), "forbidden_statement"),
    (candidate("SELECT * FROM secrets"), "unknown_table"),
    (candidate("SELECT nope FROM orders"), "unknown_column"),
    (candidate("SELEC * FROM orders"), "parse_error"),
    (candidate("SELECT * FROM orders WHERE id = :other", ID_PARAM), "parameter_mismatch"),
    (candidate("SELECT * FROM orders", name="Bad Name"), "bad_name"),
    (candidate("SELECT * FROM orders", name="get_order"), "duplicate_name"),
    (candidate("SELECT * FROM orders", {"type": "object", "properties": {"x": {"type": "date"}}}), "bad_parameters"),
    (candidate("SELECT * FROM orders WHERE total > 1 / (SELECT COUNT(*) FROM orders WHERE id < 0) + "
               "unknown_function(1)"), "dry_run_error"),
    ({"name": "x_tool", "sql": "SELECT 1"}, "malformed"),
])
def test_rejections_have_reasons(retail, cand, reason):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    with pytest.raises(Rejected) as err:
        check_sql_tool(cand, retail.schema, sandbox, taken={"get_order"})
    assert err.value.reason == reason
    assert sandbox.state_hash() == before


def test_admitted_write_tool_is_dry_run_and_rolled_back(retail):
    sandbox = retail.env.open_sandbox()
    before = sandbox.state_hash()
    tool = check_sql_tool(candidate("UPDATE orders SET status = 'cancelled' WHERE id = :order_id", ID_PARAM),
                          retail.schema, sandbox, taken=set())
    assert tool.effect == "write" and tool.parameters["required"] == ["order_id"]
    assert sandbox.state_hash() == before
    read = check_sql_tool(candidate("SELECT o.id, COUNT(i.id) AS n FROM orders o JOIN order_items i ON i.order_id = o.id "
                                    "GROUP BY o.id ORDER BY n DESC LIMIT 3", name="busiest_orders"),
                          retail.schema, sandbox, taken=set())
    assert read.effect == "read"
    assert sandbox.run(read, {}).ok
