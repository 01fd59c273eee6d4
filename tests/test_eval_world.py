"""Evaluation runs the simulated world generation runs: the same task source (service tasks of a
built-in domain, schema tasks of a bring-your-own database), the same system prompt, the same oracle,
and the domain's policy checker in the reward."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest
from conftest import make_cfg
from hydra import compose, initialize_config_module

from toolturn.core.episode import AssistantTurn
from toolturn.core.roles.oracle_assistant import OracleAssistant
from toolturn.core.tasks.service import builtin_service
from toolturn.evaluate.assistants import TextOnly
from toolturn.evaluate.run import _assistant_factory
from toolturn.evaluate.runner import Checkpoint, sample_seed
from toolturn.evaluate.sql_tau import SqlTauSuite
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


@pytest.mark.parametrize("tasks_per_episode", [1, 3])
@pytest.mark.parametrize("name", [*BUILTIN, "classic"])
def test_oracle_scores_one_and_do_nothing_zero_on_every_write(tmp_path, sample_dbs, name, tasks_per_episode):
    overrides = domain_overrides(name, sample_dbs)
    suite = make_suite(tmp_path, overrides, 30, tasks_per_episode)
    try:
        templates = Counter(t.template for i in suite.items for t in i.tasks)
        service = builtin_service(make_cfg(*overrides).domain)
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
