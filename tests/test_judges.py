"""The shared judges: whole-token fact matching and the structural checks that run before any judge."""

import json

import pytest
from llm_world import GET_CUSTOMER, World, tool
from mock_openai import MockServer, completion
from test_llm_pipeline import drops, llm_cfg
from toolturn.core.judges.execution import missing_fact
from toolturn.core.judges.facts import mentions
from toolturn.core.judges.structural import check_structure
from toolturn.core.rundir import RunDir
from toolturn.core.tasks.types import PlanStep, ReportItem, Subtask, Task
from toolturn.generate.run import generate


@pytest.mark.parametrize("text,value,stated", [
    ("order 10 is shipped", 1, False),
    ("you have 1 order.", 1, True),
    ("ORD-1001 shipped", 1001, False),
    ("ORD-1001 shipped", "ORD-1001", True),
    ("the total is 12.50", 12.5, True),
    ("the total is $12.5", 12.5, True),
    ("1,200 points", 1200, True),
    ("version 1.5", 1, False),
    ("status: pendings", "pending", False),
    ("Status: Pending.", "pending", True),
    ("ids 3, 4 and 5", [3, 5], True),
    ("ids 3, 4", [3, 5], False),
    ("flies on 2025-10-03", 10, False),
    ("flies on 2025-10-03", "2025-10-03", True),
    ("refundable: yes", True, True),
    ("no refund", True, False),
    # letters that match case-insensitively though lower() tells them apart (the regex's own rules)
    ("İSTANBUL office", "istanbul", True),
    ("ıstanbul office", "Istanbul", True),
    ("ſtatus pending", "status", True),
    ("strasse", "STRAẞE", False),
])
def test_values_are_found_only_as_whole_tokens(text, value, stated):
    assert mentions(text, value) is stated


def _task(tool_name="get_customer", expected=1, expect_error=False) -> Task:
    return Task(id="t0", domain="retail", difficulty="easy", template="lookup", goal="g",
                steps=[PlanStep(tool_name, {"id": {"$fact": "customer id"}}, expect_error)],
                subtasks=[Subtask("lookup", "customer", [0], report=[ReportItem("orders", None, expected)])],
                facts={"customer id": 7})


def test_missing_fact_needs_the_whole_number():
    assert missing_fact(_task(expected=1), "You have 10 orders.") == "orders = 1"
    assert missing_fact(_task(expected=1), "You have 1 order.") is None


TOOLS = [GET_CUSTOMER, tool("search_customers", {"limit": {"type": "integer", "default": 10},
                                                 "tier": {"type": "string", "enum": ["gold", "silver"]}}, [])]


def call(i, name="get_customer", **args):
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}


def result(i, content, name="get_customer"):
    return {"role": "tool", "tool_call_id": f"call_{i}", "name": name, "content": json.dumps(content)}


def dialogue(*middle, final="Customer 7 has the e-mail a@example.com."):
    return [{"role": "system", "content": "policy"}, {"role": "user", "content": "Email of customer 7?"},
            *middle, *([{"role": "assistant", "content": final}] if final else [])]


GOOD = [{"role": "assistant", "content": "", "tool_calls": [call(1, id=7)]}, result(1, {"email": "a@example.com"})]


@pytest.mark.parametrize("messages,reason", [
    (dialogue(*GOOD), None),
    (dialogue(), "required_tool_not_called"),  # answered from nothing (the 135M-judge case)
    (dialogue({"role": "assistant", "content": "", "tool_calls": [call(1, id=7)]},
              result(1, {"error": "no customer with id 7"})), "required_tool_not_called"),
    (dialogue({"role": "assistant", "content": "", "tool_calls": [call(1, id=7)]}), "unanswered_tool_call"),
    (dialogue({"role": "assistant", "content": "", "tool_calls": [call(1, id=7)]},
              result(2, {"email": "a@example.com"})), "unanswered_tool_call"),
    (dialogue(result(1, {"email": "a@example.com"}), *GOOD), "orphan_tool_result"),
    (dialogue(*GOOD, final=None), "no_final_reply"),
    (dialogue({"role": "assistant", "content": "", "tool_calls": [call(1, id=8)]}, result(1, {"email": "b@x.org"})),
     "ungrounded_argument"),  # customer 8 was never mentioned: a hallucinated id
])
def test_structural_checks_name_each_problem(messages, reason):
    problem = check_structure([_task()], messages, 1, TOOLS)
    assert (problem.reason if problem else None) == reason


def test_defaults_and_enum_members_need_no_grounding():
    messages = dialogue(*GOOD, {"role": "assistant", "content": "",
                                "tool_calls": [call(2, "search_customers", limit=50, tier="gold")]},
                        result(2, [], name="search_customers"))
    assert check_structure([_task()], messages, 1, TOOLS) is None


def test_a_step_expected_to_fail_must_be_called_but_may_fail():
    messages = dialogue({"role": "assistant", "content": "", "tool_calls": [call(1, id=7)]},
                        result(1, {"error": "no customer with id 7"}), final="There is no customer 7.")
    assert check_structure([_task(expect_error=True)], messages, 1, TOOLS) is None


def test_an_accepting_llm_judge_cannot_keep_a_dialogue_without_tool_calls(tmp_path):
    # task-oriented with LLM roles: one request, one answer, and the judge decides; the scripted judge
    # says "valid" to everything, so only the structural checks stand between this reply and the data
    world = World(faults={"assistant": [completion("Their e-mail is probably someone@example.com.")]})
    with MockServer(world) as server:
        # policy=report: the scripted assistant does not identify the customer (policy_identity_required)
        run = generate(llm_cfg(server.base_url, tmp_path / "run", "concurrency=1", "policy=report",
                               pipeline="task_oriented", n=2))
    assert [d["drop_reason"] for d in drops(run)] == ["required_tool_not_called"]
    for record in RunDir(run).records():
        assert any(m.get("tool_calls") for m in record["messages"])
