"""The rule-based roles follow the user-simulation rules and the oracle follows its plan."""

import asyncio
import random
from collections import Counter

import pytest
from conftest import make_cfg
from toolturn.core.episode import EpisodeState, run_episode
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.agenda_user import AgendaUser, UserBehaviour
from toolturn.core.roles.oracle_assistant import OracleAssistant
from toolturn.core.tasks.programmatic import TaskGenerator
from toolturn.generate.dialogue import DialogueFactory

USER_ORIENTED = UserBehaviour(reveal_per_turn=(1, 2), withhold_ids=0.5, confirm_prob=0.3, feedback=True,
                              close_message=True)


class Recorder:
    """Wraps the user and keeps every act it emits, per turn."""

    def __init__(self, user):
        self.user, self.turns = user, []

    async def respond(self, state):
        turn = await self.user.respond(state)
        self.turns.append(turn)
        return turn


def simulate(domain, seed, behaviour=USER_ORIENTED, n_tasks=3, slip_rate=0.0):
    rng = random.Random(seed)
    gen = TaskGenerator(domain, {"easy": 1, "medium": 1, "hard": 1})
    scratch = domain.env.open_sandbox()
    tasks = [t for k in range(n_tasks) if (t := gen.generate(scratch, rng, f"t{k}", {}))]
    write_tools = {t.name for t in domain.tools if t.effect == "write"}
    user = Recorder(AgendaUser(tasks, rng, behaviour))
    assistant = OracleAssistant(tasks, rng, write_tools, slip_rate)
    state = EpisodeState([{"role": "system", "content": "sys"}], [], start=1)
    sandbox = domain.env.open_sandbox()
    asyncio.run(run_episode(state, user, assistant, sandbox))
    return tasks, user, state, sandbox.state_hash() == scratch.state_hash()


@pytest.mark.parametrize("seed", range(12))
def test_user_reveals_one_or_two_subtasks_per_turn_and_ends_when_all_done(retail, seed):
    tasks, user, state, same_end_state = simulate(retail, seed)
    for turn in user.turns:
        new = {(a["task"], a["subtask"]) for a in turn.acts if a["act"] == "request"}
        assert len(new) <= 2
    assert user.turns[-1].done and all(not t.done for t in user.turns[:-1])
    assert all(user.user.completed(i) for i in range(len(tasks)))
    assert same_end_state
    assert state.messages[-1]["role"] == "user"


def test_user_behaviours_all_occur(retail):
    acts = set()
    asked = 0
    for seed in range(40):
        _tasks, user, state, _ = simulate(retail, seed, slip_rate=0.2)
        acts |= {a["act"] for t in user.turns for a in t.acts}
        asked += sum(1 for m in state.messages if m["role"] == "assistant" and "?" in m["content"]
                     and not m.get("tool_calls"))
    assert acts >= {"request", "inform", "confirm", "correct", "bye"}
    assert asked > 0  # withheld identifiers were asked for


def test_task_oriented_user_states_everything_at_once(retail):
    behaviour = UserBehaviour(reveal_per_turn=None, withhold_ids=0.0, confirm_prob=0.0, feedback=False,
                              close_message=False)
    for seed in range(10):
        tasks, user, state, same = simulate(retail, seed, behaviour, n_tasks=1)
        confirmations = sum(any(a["act"] in ("affirm", "decline") for a in t.acts) for t in user.turns)
        assert state.user_turns == 1 + confirmations and same  # the policy's yes before each write
        first = {(a["task"], a["subtask"]) for a in user.turns[0].acts if a["act"] == "request"}
        assert len(first) == len(tasks[0].subtasks)


def test_gold_plans_match_difficulty_and_chain_ids(retail):
    gen = TaskGenerator(retail, {"easy": 1, "medium": 1, "hard": 1})
    seen = set()
    for seed in range(60):
        task = gen.generate(retail.env.open_sandbox(), random.Random(seed), "t", {})
        seen.add(task.difficulty)
        n = len(task.steps)
        refs = [a for s in task.steps for a in s.args.values() if isinstance(a, dict) and "$ref" in a]
        if task.difficulty == "easy":
            assert n == 1
        elif task.difficulty == "medium":
            assert 2 <= n <= 3 and refs  # a later call needs an id an earlier call returned
        else:
            assert n >= 4 and refs
            assert any(s.tool.split("_")[0] in ("create", "update", "delete") for s in task.steps)
        assert task.goal.startswith("You want") and task.rubric()
    assert seen == {"easy", "medium", "hard"}


def test_every_act_has_five_phrasings_and_dialogues_differ(tmp_path, retail):
    for name in dir(P):
        if name.isupper() and isinstance(getattr(P, name), tuple):
            assert len(getattr(P, name)) >= 5, name
    factory = DialogueFactory(retail, make_cfg("domain=retail"))
    dialogues = [asyncio.run(factory.make(i)).record["messages"][1:] for i in range(30)]
    assert len({repr(d) for d in dialogues}) == 30 and len({repr(d[0]) for d in dialogues}) >= 25


def test_user_oriented_without_feedback_completes_multi_round_dialogues(tmp_path):
    """Regression: with feedback off, every request round after the first raised KeyError."""
    from toolturn.core.rundir import RunDir
    from toolturn.generate.run import generate
    run = RunDir(generate(make_cfg("pipeline=user_oriented", "pipeline.user.feedback=false", "num_dialogues=12",
                                   f"out_dir={tmp_path / 'run'}")))
    assert not [row for row in run.log_rows() if row["drop_reason"]]
    rounds = [r["meta"]["counts"]["user_turns"] for r in run.records()]
    assert max(rounds) >= 4
    for record in run.records():
        said = " ".join(m["content"] for m in record["messages"] if m["role"] == "user")
        assert not any(phrase.split("{")[0] in said for phrase in P.USER_NEXT + P.USER_CHAIN)


def _starts_with_one_of(text: str, templates: tuple[str, ...]) -> bool:
    return any(text.startswith(t.split("{")[0]) for t in templates)


def test_slips_are_context_caught_by_what_the_customer_knows_and_corrected_first(retail):
    factory = DialogueFactory(retail, make_cfg("domain=retail", "roles.assistant.slip_rate=1"))
    slips, i = 0, 0
    while slips < 3 and i < 200:  # bounded: a slip needs a number the customer knows, which not every dialogue has
        record, i = asyncio.run(factory.make(i)).record, i + 1
        messages = record["messages"] if record else []
        for k, m in enumerate(messages):
            complaint = m["role"] == "user" and any(t.split("{")[0] in m["content"] for t in P.USER_CORRECT)
            assert complaint == (messages[k - 1].get("weight") == 0)  # every slip caught, nothing else complained of
            if m.get("weight") == 0:
                slips += 1
                assert m["role"] == "assistant" and not m.get("tool_calls")
                # the reply answers the complaint before anything else (no re-proposal, no write first)
                reply = next(r for r in messages[k + 2:] if r["role"] == "assistant" and r["content"])
                assert _starts_with_one_of(reply["content"], P.ASSISTANT_FIX) and "weight" not in reply
    assert slips >= 3
    task_oriented = DialogueFactory(retail, make_cfg("domain=retail", "pipeline=task_oriented",
                                                     "roles.assistant.slip_rate=1"))
    for i in range(12):  # feedback: false, so nobody would catch a slip: none is made
        assert not any("weight" in m for m in asyncio.run(task_oriented.make(i)).record["messages"])


def test_the_user_checks_only_what_a_customer_knows_and_only_with_feedback():
    from toolturn.core.tasks.types import PlanStep, ReportItem, Subtask, Task
    report = [ReportItem("order total", None, 274.97), ReportItem("stock", None, 5)]
    task = Task("t", "d", "easy", "x", "", [PlanStep("get_order", {})],
                [Subtask("lookup", "order", [0], report=report)], {"order number": "ORD-1", "paid": 274.97})
    for feedback, corrected in ((True, ["order total"]), (False, [])):
        user = AgendaUser([task], random.Random(0), UserBehaviour((1, 1), 0.0, 0.0, feedback, True))
        state = EpisodeState([{"role": "system", "content": "sys"}], [], start=1)
        asyncio.run(user.respond(state))
        # both numbers wrong: the customer knows the total (274.97), never the stock
        state.messages.append({"role": "assistant", "content": "The order total is 300.5; the stock is 7."})
        state.assistant_acts = [{"act": "report", "task": 0, "subtask": 0, "mode": "subtask"}]
        turn = asyncio.run(user.respond(state))
        assert [a["label"] for a in turn.acts if a["act"] == "correct"] == corrected


@pytest.mark.parametrize("pipeline", ["user_oriented", "task_oriented"])
def test_confirm_prob_asks_for_confirmation_in_both_paradigms(retail, pipeline):
    """pipeline.user.confirm_prob: the user asks whether a change went through, or for a value to be looked up
    again, and the oracle answers that before anything else (a value is read again first), at most once per task;
    0 never asks."""
    def confirmations(confirm_prob):
        factory = DialogueFactory(retail, make_cfg("domain=retail", f"pipeline={pipeline}", "pipeline.user.feedback=true",
                                                   f"pipeline.user.confirm_prob={confirm_prob}"))
        asked = Counter()
        for i in range(16):
            record = asyncio.run(factory.make(i)).record
            messages = record["messages"]
            asks = [m for m in messages if m["role"] == "user" and m["content"] in P.USER_CONFIRM + P.USER_RECHECK]
            assert len(asks) <= len(record["meta"]["tasks"])
            for k, m in enumerate(messages):
                if m["role"] != "user" or m["content"] not in P.USER_CONFIRM + P.USER_RECHECK:
                    continue
                recheck = m["content"] in P.USER_RECHECK
                asked["recheck" if recheck else "went through"] += 1
                reply = next(r for r in messages[k + 1:] if r["role"] == "assistant" and r["content"])
                assert _starts_with_one_of(reply["content"], P.ASSISTANT_CONFIRM if recheck else P.ASSISTANT_CONFIRM_WRITE)
                assert bool(messages[k + 1].get("tool_calls")) == recheck  # a value is looked up again, a write never
        return asked

    assert confirmations(0.5)["recheck"] >= 1 and sum(confirmations(0.5).values()) >= 3
    assert not confirmations(0.0)
