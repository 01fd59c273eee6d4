"""The LLM roles end to end through the real client against a scripted OpenAI-compatible server,
including protocol faults: each is repaired, retried or dropped with a reason; a dead endpoint stops
the run with a clear message and the run resumes."""

import json
import threading

import pytest
from conftest import make_cfg
from llm_world import World
from mock_openai import Fault, MockServer, completion, hold_port
from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate


def llm_cfg(url, out_dir, *extra, n=3, pipeline="user_oriented"):
    return make_cfg(f"pipeline={pipeline}", "domain=retail", "roles=llm", "llm=external",
                    f"llm.endpoints.default.base_url={url}", "llm.endpoints.default.model=mock",
                    "llm.endpoints.default.timeout_s=2", "llm.endpoints.default.max_retries=1",
                    # the scripted assistant does not identify the customer: flag, don't drop (policy=report)
                    f"num_dialogues={n}", "concurrency=4", f"out_dir={out_dir}", "policy=report", *extra)


def drops(run_dir):
    return [json.loads(line) for p in (run_dir / "shards").glob("log-*.jsonl") for line in p.read_text().splitlines()
            if json.loads(line)["drop_reason"]]


@pytest.mark.parametrize("pipeline", ["user_oriented", "task_oriented"])
def test_llm_roles_complete_dialogues(tmp_path, pipeline):
    with MockServer(World()) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", pipeline=pipeline, n=4))
    records = RunDir(run).records()
    assert len(records) == 4
    for r in records:
        meta = r["meta"]
        assert meta["roles"]["user"] == "mock" and meta["judge"]["judgment"] == "valid"
        assert meta["timing"]["prompt_tokens"] > 0 and meta["timing"]["llm_calls"] >= 4
        assert all(t["template"] == "llm" and t["rubric"] for t in meta["tasks"])
        calls = [c for m in r["messages"] for c in m.get("tool_calls") or []]
        assert calls and calls[0]["function"]["name"] == "get_customer"
        assert not any("reasoning_content" in m for m in r["messages"])  # the model returned none
    for r in records:  # a request per task, plus the closing thanks in the user-oriented paradigm
        counts = r["meta"]["counts"]
        assert counts["user_turns"] == counts["tasks"] + (pipeline == "user_oriented")
    assert audit_run(RunDir(run)).ok


def test_malformed_json_is_repaired_then_dropped_with_reason(tmp_path):
    world = World(faults={"user": [completion("not json at all"),  # repaired by the second reply
                                   None, None,
                                   completion("{broken"), completion("still {broken")]})  # twice: dropped
    with MockServer(world) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1", "pipeline.tasks_per_dialogue=[1,1]"))
    assert len(RunDir(run).records()) == 3
    reasons = [d["drop_reason"] for d in drops(run)]
    assert reasons == ["user_json"]
    assert any(r["meta"]["llm_events"].get("user_json_repaired") for r in RunDir(run).records())


def test_bad_tool_calls_become_tool_errors(tmp_path):
    unknown = completion(None, tool_calls=[{"name": "drop_all_tables", "arguments": {}}])
    bad_args = completion(None, tool_calls=[{"name": "get_customer", "arguments": {"id": "'; DROP TABLE x; --"}}])
    not_json = completion(None, tool_calls=[{"name": "get_customer", "arguments": "{id: 1"}])
    world = World(faults={"assistant": [unknown, bad_args, not_json]})
    with MockServer(world) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1", "pipeline.tasks_per_dialogue=[1,1]",
                               n=1))
    record = RunDir(run).records()[0]
    errors = [json.loads(m["content"])["error"] for m in record["messages"] if m["role"] == "tool"
              and "error" in json.loads(m["content"])]
    assert any("unknown tool 'drop_all_tables'" in e for e in errors)
    assert any("must be of type integer" in e for e in errors)
    assert any("must be a JSON object" in e for e in errors)
    assert record["meta"]["counts"]["tool_errors"] == 3
    assert audit_run(RunDir(run)).ok


def test_empty_and_truncated_replies_are_retried_then_dropped(tmp_path):
    empty, cut = completion(""), completion("The email is", finish_reason="length")
    world = World(faults={"assistant": [empty, None, None, cut, cut]})
    with MockServer(world) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1", "pipeline.tasks_per_dialogue=[1,1]",
                               n=2))
    assert len(RunDir(run).records()) == 2
    assert [d["drop_reason"] for d in drops(run)] == ["assistant_truncated"]
    events = [r["meta"]["llm_events"] for r in RunDir(run).records()]
    assert any(e.get("assistant_retried") for e in events)


def test_server_error_then_success_is_retried(tmp_path):
    world = World(faults={"user": [Fault.status(500), Fault.status(503, retry_after=0.01)]})
    with MockServer(world) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "llm.endpoints.default.max_retries=3", n=2))
    assert len(RunDir(run).records()) == 2 and not drops(run)


def test_hung_requests_stop_the_run_which_then_resumes(tmp_path):
    world = World(faults={"judge": [Fault.hang(10)] * 2})  # the attempt and its one retry
    with MockServer(world) as server:
        with pytest.raises(ToolturnError, match="no response within 2 s.*re-running the same command resumes"):
            generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1", n=3))
        partial = RunDir(tmp_path / "run").records() if (tmp_path / "run" / "shards").exists() else []
        assert len(partial) < 3
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1", n=3))
    records = RunDir(run).records()
    assert len(records) == 3 and len({r["id"] for r in records}) == 3
    assert not drops(run)  # the stopped dialogue was not written as complete nor as dropped


def test_server_dying_mid_run_stops_cleanly_and_resumes(tmp_path):
    world, dying = World(), threading.Event()

    def handler(request):
        if sum(world.calls.values()) == 25:
            dying.set()  # the server goes away after its 25th answer
        return world(request)

    server, held = MockServer(handler), hold_port()  # the address stays ours while the server is down
    url = server.start(port=held.getsockname()[1])
    threading.Thread(target=lambda: dying.wait() and server.stop(), daemon=True).start()
    with held:
        with pytest.raises(ToolturnError, match="Connect call failed.*resumes"):
            generate(llm_cfg(url, tmp_path / "run", "concurrency=2", n=8))
        assert len(RunDir(tmp_path / "run").records()) < 8
        restarted = MockServer(World())
        restarted.start(port=server.port)  # the endpoint comes back at the same address
        try:
            run = generate(llm_cfg(url, tmp_path / "run", "concurrency=2", n=8))
        finally:
            restarted.stop()
    records = RunDir(run).records()
    assert len(records) == 8 and len({r["id"] for r in records}) == 8
    assert audit_run(RunDir(run)).ok


def test_simulated_tools_on_a_builtin_domain(tmp_path):
    with MockServer(World()) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "tools=simulated", n=3))
    records = RunDir(run).records()
    assert len(records) == 3 and all(r["meta"]["tool_mode"] == "simulated" for r in records)
    schemas = json.loads((run / "domains" / "retail" / "return_schemas.json").read_text())
    assert schemas["get_customer"]["type"] == "object"
    report = audit_run(RunDir(run))
    assert report.ok and report.simulated == 3 and report.calls == 0


def test_synthetic_toolset_domain(tmp_path):
    with MockServer(World()) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "tools=simulated", "domain=synthetic",
                               "domain.name=pet clinic", n=2))
    toolset = json.loads((run / "domains" / "pet_clinic" / "toolset.json").read_text())
    assert {t["function"]["name"] for t in toolset} == {"get_customer", "search_customers", "list_orders"}
    stats = json.loads((run / "stats.json").read_text())
    assert stats["synthesis_rejections"] == {"tool_spec:bad_name": 5, "tool_spec:duplicate_name": 8,
                                             "tool_spec:bad_parameter_type": 1}
    assert len(RunDir(run).records()) == 2


def test_llm_written_sql_tools_are_validated(tmp_path):
    with MockServer(World()) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "tools.llm_sql_tools=5", n=1))
    admitted = json.loads((run / "domains" / "retail" / "llm_tools.json").read_text())
    assert [t["name"] for t in admitted] == ["top_customers_by_spend"]
    assert "top_customers_by_spend" in {t["name"] for t in json.loads((run / "domains/retail/tools.json").read_text())}
    stats = json.loads((run / "stats.json").read_text())
    assert stats["synthesis_rejections"] == {"sql_tool:forbidden_statement": 1, "sql_tool:not_one_statement": 1,
                                             "sql_tool:unknown_table": 1, "sql_tool:unknown_column": 1,
                                             "sql_tool:forbidden_function": 1}


def test_llm_synthesized_schema_becomes_a_sqlite_domain(tmp_path):
    with MockServer(World()) as server:
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "domain=synthetic_sql", "domain.name=pet clinic",
                               n=2))
    tools = {t["name"] for t in json.loads((run / "domains" / "pet_clinic" / "tools.json").read_text())}
    assert {"get_customer", "list_visits_for_customer", "summarize_customers_by_status"} <= tools
    assert len(RunDir(run).records()) == 2 and audit_run(RunDir(run)).ok


def test_a_run_that_only_drops_stops_with_the_reason(tmp_path):
    invalid = completion(json.dumps({"judgment": "invalid", "reasoning": "the email was never stated"}))
    with MockServer(World(faults={"judge": [invalid] * 100})) as server:
        with pytest.raises(ToolturnError, match="5 dialogues in a row were dropped .most often judge_invalid"):
            generate(llm_cfg(server.base_url, tmp_path / "run", "max_drop_streak=5", "concurrency=1"))


def test_each_role_can_use_its_own_endpoint(tmp_path):
    with MockServer(World()) as main_server, MockServer(World()) as user_server:
        second = (f"+llm.endpoints.users={{server: none, base_url: '{user_server.base_url}', model: other, "
                  f"max_concurrency: 2, timeout_s: 5, max_retries: 1}}")
        run = generate(llm_cfg(main_server.base_url, tmp_path / "run", second, "roles.user.endpoint=users", n=2))
        user_roles = {r for r, n in user_server.handler.calls.items() if n}
        main_roles = {r for r, n in main_server.handler.calls.items() if n}
    assert user_roles == {"user"} and "user" not in main_roles and {"assistant", "judge"} <= main_roles
    assert {r["meta"]["roles"]["user"] for r in RunDir(run).records()} == {"other"}
