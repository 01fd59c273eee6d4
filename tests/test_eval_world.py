"""Evaluation runs the simulated world generation runs: the same task source (service tasks of a
built-in domain, schema tasks of a bring-your-own database), the same system prompt, the same oracle,
and the domain's policy checker in the reward. Held-out tasks are drawn stratified over task kinds, and
the behaviour rates name what a policy violation's reward of 0 hides."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest
from conftest import make_cfg
from hydra import compose, initialize_config_module

from toolturn.core.domains.registry import REGISTRY
from toolturn.core.domains.retail import SERVICE
from toolturn.core.episode import AssistantTurn
from toolturn.core.errors import ToolturnError
from toolturn.core.roles.oracle_assistant import OracleAssistant
from toolturn.core.tasks.service import ServiceTaskGenerator
from toolturn.evaluate.assistants import TextOnly
from toolturn.evaluate.behaviour import behaviour
from toolturn.evaluate.run import _assistant_factory
from toolturn.evaluate.runner import Checkpoint, sample_seed
from toolturn.evaluate.sql_tau import SqlTauSuite
from toolturn.evaluate.tasks import ATTEMPTS_PER_ITEM, KINDS, make_items
from toolturn.generate.dialogue import DialogueFactory

BUILTIN = ("retail", "airline", "telecom")


def domain_overrides(name: str, sample_dbs) -> list[str]:
    return [f"domain={name}"] if name in BUILTIN else ["domain=sqlite", f"domain.path={sample_dbs[name]}"]


def make_suite(tmp_path, overrides: list[str], num_tasks: int, tasks_per_episode: int = 1) -> SqlTauSuite:
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["progress=false", "logger=none", f"num_tasks={num_tasks}",
                                             f"eval.tasks_per_episode={tasks_per_episode}", f"out_dir={tmp_path}",
                                             *overrides])
    return SqlTauSuite(cfg, tmp_path)


def play(suite: SqlTauSuite, make, items=None) -> list[dict]:
    async def run():
        return [await suite.episode(item, make(item, sample_seed(0, item.id, 0))) for item in items or suite.items]
    return asyncio.run(run())


@pytest.mark.parametrize("name,tasks_per_episode", [(name, k) for k in (1, 3) for name in (*BUILTIN, "classic")])
def test_oracle_scores_one_and_do_nothing_zero_on_every_write(tmp_path, sample_dbs, name, tasks_per_episode):
    overrides = domain_overrides(name, sample_dbs)
    suite = make_suite(tmp_path, overrides, 30, tasks_per_episode)
    try:
        templates = Counter(t.template for i in suite.items for t in i.tasks)
        service = REGISTRY.service(make_cfg(*overrides).domain)
        if service is not None:  # the generation's task source: service tasks, refusals among them
            assert set(templates) <= {s.name for s in service.scenarios} | {s.name + "_declined" for s in
                                                                            service.scenarios}
            assert any(t.startswith("refuse") for t in templates) and suite.policy.identity is not None
        else:
            assert suite.policy.name == "generic" and suite.identify is None
        generation = DialogueFactory(suite.domain, make_cfg(*overrides))
        assert suite.system == generation.system_prompt  # the prompt the training data was made with
        oracle = play(suite, _assistant_factory(Checkpoint("oracle", "oracle"), suite))
        failed = [(r["parts"], r["messages"][-3:]) for r in oracle if r["reward"] != 1.0]
        assert not failed, failed[0]
        assert all(r["parts"]["policy_violations"] == [] and r["termination"] == "user_done" for r in oracle)
        floor = play(suite, _assistant_factory(Checkpoint("do_nothing", "do_nothing"), suite))
        writes = [r for r in floor if r["needs_write"]]
        assert writes and all(r["reward"] == 0.0 and not r["parts"]["db_match"] for r in writes)
    finally:
        suite.close()


class Unconfirmed(OracleAssistant):
    """The oracle, but it takes every change of its plan as confirmed: it writes without asking."""

    async def respond(self, state):
        self.confirmed |= {(ti, k) for ti, t in enumerate(self.tasks) for k, step in enumerate(t.steps)
                           if step.tool in self.write_tools}
        return await super().respond(state)


class Unidentified(OracleAssistant):
    """The oracle, but it knows the customer's id without looking them up: it reads before identifying."""

    def __init__(self, *args, customer_id, **kw):
        super().__init__(*args, **kw)
        self.identity = {"customer_id": customer_id}


def _violating(suite, item, kind):
    writes = {t.name for t in suite.domain.tools if t.effect == "write"}
    kw = dict(policy=suite.policy, identify=suite.identify)
    if kind == "unconfirmed_write":
        return TextOnly(Unconfirmed(item.tasks, random.Random(0), writes, **kw))
    sandbox = suite.domain.env.open_sandbox()
    email = item.tasks[0].facts["email address"]
    customer = sandbox.call("find_customer_by_email", {"email": email})
    sandbox.close()
    return TextOnly(Unidentified(item.tasks, random.Random(0), writes,
                                 customer_id=json.loads(customer.content)["customer_id"], **kw))


@pytest.mark.parametrize("kind,template", [("unconfirmed_write", "cancel_order"),
                                           ("identity_required", "order_status")])
def test_a_policy_violation_makes_the_reward_zero_and_is_recorded(tmp_path, kind, template):
    suite = make_suite(tmp_path, ["domain=retail"], 40)
    try:
        item = next(i for i in suite.items if i.tasks[0].template == template)
        row = play(suite, lambda it, seed: _violating(suite, it, kind), [item])[0]
        parts = row["parts"]
        assert parts["db_match"] and parts["facts_communicated"] and parts["ended_by_user"], parts
        assert row["reward"] == 0.0 and not parts["policy_compliant"]
        violation = parts["policy_violations"][0]
        assert violation["rule"] == kind and violation["detail"]
        assert row["messages"][violation["message"]]["tool_calls"]  # the call that broke the rule
    finally:
        suite.close()


class SilentRefusal(OracleAssistant):
    """The oracle, but it never says no to a request the policy forbids: it states the policy's reason
    (and so its facts) as if nothing were refused."""

    def _report(self, mode, ti, si):
        st = self.tasks[ti].subtasks[si]
        if st.kind != "refuse":
            return super()._report(mode, ti, si)
        return f"Noted: {self.policy.reason(st.detail['refusal'], **st.detail['reason_values'])}."


def test_a_forbidden_request_not_refused_in_words_scores_zero(tmp_path):
    suite = make_suite(tmp_path, ["domain=retail", "eval.refusal_share=1.0"], 8)
    try:
        item = next(i for i in suite.items if i.tasks[0].subtasks[-1].detail.get("refusal") in ("state", "window"))
        writes = {t.name for t in suite.domain.tools if t.effect == "write"}
        row = play(suite, lambda it, seed: TextOnly(SilentRefusal(it.tasks, random.Random(0), writes,
                                                                  policy=suite.policy, identify=suite.identify)),
                   [item])[0]
        parts = row["parts"]
        assert parts["db_match"] and parts["facts_communicated"] and parts["policy_compliant"], parts
        assert row["reward"] == 0.0 and not parts["refusals_explained"] and "not refused" in parts["unexplained_refusal"]
    finally:
        suite.close()


def _has_ref(item) -> bool:
    return '"$ref"' in json.dumps([t.to_dict()["steps"] for t in item.tasks])


@pytest.mark.parametrize("name", BUILTIN)
def test_eight_held_out_tasks_hold_each_kind_in_turn_as_defined(tmp_path, name):
    suite = make_suite(tmp_path, [f"domain={name}"], 8)
    try:
        assert [i.kind for i in suite.items] == list(KINDS) * 2 and suite.draw.skipped == {}
        for item in suite.items:
            refuses = any(st.kind == "refuse" and st.detail.get("refusal") for t in item.tasks for st in t.subtasks)
            assert refuses == (item.kind == "refusal")
            assert item.needs_write == (item.kind == "write")  # the gold plans change the database
            if item.kind == "read":
                assert not _has_ref(item)  # every step needs only what the user says
            if item.kind == "multi_step":
                assert _has_ref(item)
        written = [json.loads(line) for line in (tmp_path / "tasks.jsonl").read_text().splitlines()]
        assert [w["kind"] for w in written] == [i.kind for i in suite.items]
        assert [w["id"] for w in written] == [f"{name}-eval-s0-i{k}" for k in range(8)]
    finally:
        suite.close()


def test_a_schema_database_makes_no_refusals_and_the_draw_says_so(tmp_path, sample_dbs):
    suite = make_suite(tmp_path, domain_overrides("classic", sample_dbs), 6)
    try:
        assert [i.kind for i in suite.items] == ["read", "write", "multi_step"] * 2
        assert suite.draw.skipped == {"refusal": f"the task source made no refusal task in {ATTEMPTS_PER_ITEM} draws"}
        lines = suite.report_lines(suite.header())
        assert f"Not drawn: refusal: the task source made no refusal task in {ATTEMPTS_PER_ITEM} draws." in lines
    finally:
        suite.close()


class RefusalsRunOut:
    """The retail task source, but from the fifth held-out item on it makes no refusal (task ids are
    `<item id>-t<k>`, item ids end in `-i<index>`)."""

    def __init__(self, inner):
        self.inner = inner

    def generate(self, sandbox, rng, task_id, rejects, prior):
        task = self.inner.generate(sandbox, rng, task_id, rejects, prior)
        late = int(task_id.rsplit("-i", 1)[1].split("-")[0]) >= 4
        return None if task is not None and late and any(st.kind == "refuse" for st in task.subtasks) else task


def test_a_kind_the_domain_stops_making_or_no_task_at_all_is_a_one_line_error(retail):
    source = ServiceTaskGenerator(retail, SERVICE, {"easy": 0.3, "medium": 0.4, "hard": 0.3}, 0.15)
    with pytest.raises(ToolturnError, match=rf"^domain retail: held-out item 6 found no refusal task in "
                                            rf"{ATTEMPTS_PER_ITEM} seeds although earlier items did"):
        make_items(retail, RefusalsRunOut(source), 8, seed=0, tasks_per_episode=1, tools_per_episode=4)

    class Nothing:
        def generate(self, *args):
            return None

    with pytest.raises(ToolturnError, match="^domain retail: no held-out task could be made"):
        make_items(retail, Nothing(), 2, seed=0, tasks_per_episode=1, tools_per_episode=4)


def test_behaviour_rates_say_what_a_zero_reward_hides(tmp_path):
    suite = make_suite(tmp_path, ["domain=retail"], 40)
    try:
        cancel = next(i for i in suite.items if i.tasks[0].template == "cancel_order")
        status = next(i for i in suite.items if i.tasks[0].template == "order_status")
        oracle = _assistant_factory(Checkpoint("oracle", "oracle"), suite)
        floor = _assistant_factory(Checkpoint("do_nothing", "do_nothing"), suite)

        def rates(make, items):
            return behaviour(play(suite, make, items), suite.world)

        unconfirmed = rates(lambda it, seed: _violating(suite, it, "unconfirmed_write"), [cancel])
        assert unconfirmed["confirmed_writes"] == {"value": 0.0, "n": 1}
        assert unconfirmed["identified_first"] == {"value": 1.0, "n": 1}
        unidentified = rates(lambda it, seed: _violating(suite, it, "identity_required"), [status])
        assert unidentified["identified_first"] == {"value": 0.0, "n": 1}
        assert unidentified["confirmed_writes"] == {"value": None, "n": 0}  # no write: not a 0
        right = rates(oracle, [cancel, status])
        assert right["confirmed_writes"] == {"value": 1.0, "n": 1} and right["identified_first"] == {"value": 1.0, "n": 2}
        assert right["valid_tool_calls"]["value"] == 1.0 and right["valid_tool_calls"]["n"] >= 4
        nothing = rates(floor, [cancel, status])
        assert nothing["tool_call_turns"]["value"] == 0.0 and nothing["tool_call_turns"]["n"] >= 2
        assert all(nothing[r] == {"value": None, "n": 0} for r in ("valid_tool_calls", "identified_first",
                                                                   "confirmed_writes"))
    finally:
        suite.close()
