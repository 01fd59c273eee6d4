"""The rule-based text user against the oracle speaking only text, a do-nothing assistant, a scripted
assistant that asks for the e-mail first, and replies it cannot understand; on schema tasks (any
database) and on a built-in domain's service tasks (identification, confirmation, declines, refusals)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
from toolturn.core.domains.retail import SERVICE
from toolturn.core.episode import AssistantTurn, EpisodeState, run_episode
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.acts import is_affirmation
from toolturn.core.roles.oracle_assistant import OracleAssistant
from toolturn.core.roles.text_user import (
    NO_CHANGE,
    WRONG_VALUE,
    TextUser,
    TextUserBehaviour,
    change_slots,
    questions,
)
from toolturn.core.tasks.programmatic import TaskGenerator
from toolturn.core.tasks.service import ServiceTaskGenerator
from toolturn.core.tasks.types import format_value
from toolturn.evaluate.assistants import DoNothing, TextOnly
from toolturn.evaluate.reward import score
from toolturn.evaluate.tasks import make_items

WEIGHTS = {"easy": 0.3, "medium": 0.4, "hard": 0.3}


@pytest.fixture(scope="module")
def items(retail):
    """Schema tasks, the task source of a database without a service of its own."""
    return make_items(retail, TaskGenerator(retail, WEIGHTS), 25, seed=3, tasks_per_episode=2,
                      tools_per_episode=0).items


def service_items(retail, n=6, refusal_share=0.0, decline_prob=0.0, weights=WEIGHTS):
    generator = ServiceTaskGenerator(retail, replace(SERVICE, decline_prob=decline_prob), weights, refusal_share)
    return make_items(retail, generator, n, seed=3, tasks_per_episode=1, tools_per_episode=0).items


def oracle(domain, item):
    writes = {t.name for t in domain.tools if t.effect == "write"}
    return TextOnly(OracleAssistant(item.tasks, random.Random(0), writes, policy=domain.rules,
                                    identify=(SERVICE.identify[0], SERVICE.slot)))


def play(domain, item, assistant, behaviour=TextUserBehaviour()):
    sandbox = domain.env.open_sandbox()
    state = EpisodeState([{"role": "system", "content": "sys"}], domain.toolset, 1)
    user = TextUser(item.tasks, random.Random(item.id), behaviour, lambda k: sandbox.state_hash() == item.gold[k])
    asyncio.run(run_episode(state, user, assistant, sandbox, max_messages=200))
    end = sandbox.state_hash()
    sandbox.close()
    return user, state, score(item.tasks, state.messages, 1, end, item.gold[-1], f"user_{user.outcome}")


def test_oracle_speaking_only_text_completes_every_task(retail, items):
    writes = {t.name for t in retail.tools if t.effect == "write"}
    assert any(i.needs_write for i in items) and any(len(i.tasks) > 1 for i in items)
    for item in items:
        user, state, reward = play(retail, item, TextOnly(OracleAssistant(item.tasks, random.Random(0), writes)))
        assert user.outcome == "done" and reward.reward == 1.0, (item.id, reward, state.messages[-4:])
        assert state.assistant_acts == []  # the user never saw a dialogue act


def test_do_nothing_assistant_makes_the_user_give_up(retail, items):
    for item in items:
        user, state, reward = play(retail, item, DoNothing(), TextUserBehaviour(max_stall_turns=2))
        assert user.outcome == "gave_up" and state.user_turns == 3  # the request, two stalled turns, goodbye
        assert not reward.facts_communicated
        if item.needs_write:
            assert not reward.db_match and reward.reward == 0.0


class Scripted:
    """Asks for the e-mail first, whatever the user said, then says nothing useful."""

    def __init__(self, first: str):
        self.first, self.turns = first, 0

    async def respond(self, state):
        self.turns += 1
        return AssistantTurn(self.first if self.turns == 1 else "Hmm, let me think about that.")


def _email_item(items):
    return next(i for i in items if any(s.endswith("email") for s in i.tasks[0].facts))


@pytest.mark.parametrize("ask", ["Before anything else, what is your e-mail address?",
                                 "Could you please share the customer email on the account?"])
def test_user_gives_the_email_it_holds_when_asked_first(retail, items, ask):
    item = _email_item(items)
    slot = next(s for s in item.tasks[0].facts if s.endswith("email"))
    user, state, _ = play(retail, item, Scripted(ask))
    answer = state.messages[3]["content"]
    assert item.tasks[0].facts[slot] in answer, answer


def test_user_without_an_email_says_so_and_repeats_its_request(retail, items):
    item = next(i for i in items if not any("email" in s for t in i.tasks for s in t.facts))
    user, state, _ = play(retail, item, Scripted("Could you give me your email address?"))
    reply = state.messages[3]["content"]
    assert reply.startswith(("I'm not sure", "I don't", "Hmm, I can't", "Sorry, I don't")), reply
    assert user.outcome == "gave_up"


@pytest.mark.parametrize("garbage", ["", "?????", "<tool_call>{broken", "42 " * 500, "\u0000\ufffd\n\n!", "Shall I?"])
def test_replies_it_cannot_understand_never_crash_it(retail, items, garbage):
    user, state, reward = play(retail, items[0], Scripted(garbage))
    assert user.outcome == "gave_up" and reward.reward == 0.0


def test_proposals_are_confirmed_when_they_match_and_declined_otherwise(retail, items):
    item = next(i for i in items if any(st.kind == "update" for st in i.tasks[0].subtasks))
    task = item.tasks[0]
    si = next(k for k, st in enumerate(task.subtasks) if st.kind == "update")
    user = TextUser([task], random.Random(0), TextUserBehaviour())
    user.started, user.open = True, {(0, si): 1}
    slot = change_slots(task, task.subtasks[si])[0]
    new = task.facts[slot]
    corrections = {t.format(s=slot, v=format_value(new)) for t in WRONG_VALUE}
    state = EpisodeState([{"role": "system", "content": ""}], [], 1)

    def answer(proposal: str) -> str:
        state.messages.append({"role": "assistant", "content": proposal})
        return asyncio.run(user.respond(state)).text

    assert answer(f"Shall I update it to {new}?") in P.USER_AFFIRM
    assert answer("Shall I update it to 123456789?") in corrections
    assert answer("Should I delete the customer's account?") in corrections  # not the change asked for
    user.open = {}  # no change left to make: any change is turned down (then the next request follows)
    assert answer("Should I delete the customer's account?").startswith(NO_CHANGE)


def test_questions_are_found_by_mark_or_request_phrase():
    assert questions("Found it. What is your e-mail?") == ["What is your e-mail?"]
    assert questions("The email is a@b.com. Please share the order number.") == ["Please share the order number."]
    assert questions("Here you go: the status is active.") == []
    # request words only as requests: a plan named Share, a relative "which", a closing offer ask for nothing
    assert questions("You're on the Family Share 50 plan. It's the Smart Jeans, which costs 3.") == []
    assert questions("Let me know if there's anything else.") == [] and questions("Let me know your email.")
    assert questions("Okay, which order number is it. Share your email, then.") == \
        ["Okay, which order number is it.", "Share your email, then."]


def test_a_change_that_never_reached_the_database_is_not_accepted(retail, items):
    """The facts are stated but nothing was written: the user asks for the change, then gives up."""
    item = next(i for i in items if i.needs_write and len(i.tasks) == 1 or i.needs_write)
    writes = {t.name for t in retail.tools if t.effect == "write"}

    class Pretender(OracleAssistant):  # reports the gold values but never runs a write
        async def respond(self, state):
            turn = await super().respond(state)
            if turn.tool_calls and turn.tool_calls[0]["name"] in writes:
                return AssistantTurn("", [{"name": "get_" + turn.tool_calls[0]["name"].split("_", 1)[1],
                                           "arguments": {"id": 1}}])
            return turn

    user, state, reward = play(retail, item, TextOnly(Pretender(item.tasks, random.Random(0), writes)))
    assert user.outcome == "gave_up" and not reward.db_match
    assert any("change" in (m.get("content") or "") or "records" in (m.get("content") or "")
               for m in state.messages if m["role"] == "user")


# ---- service tasks --------------------------------------------------------------------------------
def _user_after(state, predicate) -> str:
    """The user's reply to the first assistant message that satisfies `predicate`."""
    k = next(i for i, m in enumerate(state.messages) if m["role"] == "assistant" and predicate(m.get("content") or ""))
    return next(m["content"] for m in state.messages[k:] if m["role"] == "user")


def test_a_customer_who_will_not_identify_says_so_and_accepts_the_refusal(retail):
    item = next(i for i in service_items(retail, 12, refusal_share=1.0) if i.tasks[0].template == "refuse_unidentified")
    user, state, reward = play(retail, item, oracle(retail, item))
    answer = _user_after(state, lambda t: "email address" in t)
    assert any(answer == t.format(s="email address") for t in P.USER_WITHHOLD), answer
    assert "@" not in answer
    closing = [m["content"] for m in state.messages if m["role"] == "user"][-1]
    assert any(t in closing for t in P.USER_UNDERSTOOD), closing  # the refusal ends the subtask
    assert user.outcome == "done" and reward.reward == 1.0 and reward.refusals_explained, reward


def test_a_change_the_task_declines_is_declined_and_nothing_is_written(retail):
    items = service_items(retail, 4, decline_prob=1.0, weights={"hard": 1.0})
    assert all(i.tasks[0].template.endswith("_declined") and not i.needs_write for i in items)
    for item in items:
        user, state, reward = play(retail, item, oracle(retail, item))
        said = [m["content"] for m in state.messages if m["role"] == "user"]
        assert [t for t in said if t in NO_CHANGE and not is_affirmation(t)], said
        assert user.outcome == "done" and reward.reward == 1.0 and state.tool_calls == len(item.tasks[0].steps), reward


def test_a_proposal_is_confirmed_only_with_the_values_the_change_takes(retail):
    item = next(i for i in service_items(retail, 12, weights={"hard": 1.0}) if i.tasks[0].template == "cancel_order")
    task = item.tasks[0]
    user = TextUser([task], random.Random(0), TextUserBehaviour())
    user.started, user.open = True, {(0, 1): 1}
    number = task.facts["order number"]
    state = EpisodeState([{"role": "system", "content": ""}], [], 1)
    state.messages.append({"role": "assistant", "content": "I can cancel pending order with order number ORD-000001. "
                                                           "Shall I go ahead?"})
    wrong = asyncio.run(user.respond(state)).text
    state.messages.append({"role": "assistant", "content": f"To confirm, I'm about to cancel pending order with "
                                                           f"order number {number}. Shall I go ahead?"})
    yes = asyncio.run(user.respond(state)).text
    assert number in wrong and any(wrong == t.format(s="order number", v=number) for t in WRONG_VALUE), wrong
    assert is_affirmation(yes) and number not in yes, yes


def test_facts_reported_before_a_proposal_in_one_message_count(retail):
    """A proposal ends its message; the report before it is read, the change it proposes is not."""
    item = next(i for i in service_items(retail, 12, weights={"hard": 1.0}) if i.tasks[0].template == "cancel_order")
    task = item.tasks[0]
    check, cancel = task.subtasks[0], task.subtasks[1]
    user = TextUser([task], random.Random(0), TextUserBehaviour())
    user.started, user.open = True, {(0, 0): 1, (0, 1): 1}
    facts = "; ".join(f"the {r.label} is {r.expected}" for r in check.report)
    state = EpisodeState([{"role": "system", "content": ""}], [], 1)
    state.messages.append({"role": "assistant", "content": f"Here's what I found: {facts}. Here is the change: "
                                                           f"cancel it, status cancelled. Do you want me to proceed?"})
    asyncio.run(user.respond(state))
    assert (0, 0) in user.done and (0, 1) in user.open and cancel.report


@pytest.mark.parametrize("garbage", ["", "Shall I?", "I can't.", "What is your email address? " * 50])
def test_service_users_never_crash_on_replies_they_cannot_understand(retail, garbage):
    items = service_items(retail, 8, refusal_share=0.5)
    assert any(i.needs_write for i in items) and any(i.tasks[0].template.startswith("refuse") for i in items)
    for item in items:
        user, state, reward = play(retail, item, Scripted(garbage))
        assert user.outcome in ("gave_up", "done") and state.tool_calls == 0
        assert reward.reward == 0.0 or not item.needs_write
