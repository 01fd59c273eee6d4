"""Issue 15's goals and language: one customer's coherent visit, changes proposed in the customer's terms,
one sentence-joiner, reads never phrased as writes."""

import asyncio
import random
import re

import pytest
from conftest import make_cfg
from toolturn.core.judges.execution import REFUSAL_CUE
from toolturn.core.policy_check import _states
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.acts import asks_confirmation
from toolturn.core.roles.text_user import _WRITE_VERB
from toolturn.generate.dialogue import DialogueFactory

SKU = re.compile(r"\b[A-Z]{3}-\d{5}\b")  # retail's internal product ids (core/domains/retail/data.py)


@pytest.fixture(scope="module")
def dialogues(retail):
    factory = DialogueFactory(retail, make_cfg("domain=retail", "pipeline.tasks_per_dialogue=[3,4]",
                                               "tasks.difficulty={easy: 0.1, medium: 0.3, hard: 0.6}"))
    records = [asyncio.run(factory.make(i)).record for i in range(16)]
    assert None not in records  # nothing dropped
    return records


def test_one_visit_asks_for_nothing_twice_and_never_against_an_earlier_outcome(dialogues):
    for record in dialogues:
        tasks = record["meta"]["tasks"]
        names = [t["template"].removesuffix("_declined") for t in tasks]
        assert len(names) == len(set(names)), names
        for i, task in enumerate(tasks):
            settled = any(st.get("detail", {}).get("decline") or st["kind"] == "refuse"
                          for st in task["gold"]["subtasks"])
            if settled:
                ids = {v for k, v in task["gold"]["facts"].items() if k != "email address" and isinstance(v, str)}
                for later in tasks[i + 1:]:
                    assert not ids & set(later["gold"]["facts"].values()), (task["template"], later["template"])


def test_changes_are_proposed_in_the_customers_terms(dialogues):
    proposals = 0
    for record in dialogues:
        said = ""
        for m in record["messages"]:
            if m["role"] == "user":
                said += " " + m["content"]
            elif m["role"] == "assistant" and asks_confirmation(m.get("content") or ""):
                proposals += 1
                text = m["content"]
                assert not re.search(r"\b(sku|address id|customer id)\b", text, re.I), text
                assert all(sku in said for sku in SKU.findall(text)), text
    assert proposals >= 5
    said = [m.get("content") or "" for r in dialogues for m in r["messages"]]
    assert not [text for text in said if "rather not give you my email" in text]


def test_a_read_is_never_reported_as_a_change(dialogues):
    for record in dialogues:
        wrote = False
        for m in record["messages"]:
            if m["role"] == "user":
                wrote = False
            elif m["role"] == "assistant":
                wrote |= any(not c["function"]["name"].startswith(("get_", "find_", "search_", "list_"))
                             for c in m.get("tool_calls") or [])
                if not wrote:
                    assert not re.match(r"(Done|All set|All done|Finished)\b", m.get("content") or ""), m["content"]


def test_one_joiner_for_every_message():
    assert P.fill("Perfect. While I have you, {r}", r="Could you check it?") == \
        "Perfect. While I have you, could you check it?"
    assert P.fill("Great. Now {r}", r="I'd like a refund.") == "Great. Now I'd like a refund."
    assert P.fill("{f}.", f="the price is 3") == "The price is 3."
    assert P.fill("Sure, the {s} is {v}.", s="product", v="Deluxe Kettle") == "Sure, the product is Deluxe Kettle."
    assert P.join(["Fair enough. ", "", "Next, could you help?"]) == "Fair enough. Next, could you help?"
    rng = random.Random(0)
    for _ in range(40):  # an acknowledgement already said: no second one, no second thank-you
        framed = P.framed(rng, P.USER_CHAIN, ["Fair enough."], "Could you help?", P.USER_UNDERSTOOD)
        assert framed.startswith(tuple(t.split("{")[0] for t in P.CHAIN_TURN)), framed
        closing = P.closing(rng, ["Fair enough."], P.USER_UNDERSTOOD)
        assert closing.startswith("Fair enough. ") and "thank" not in closing.split(". ", 1)[1].lower(), closing


def test_only_proposals_ask_leave_and_no_report_lead_reads_as_a_change():
    filled = dict(s="order number", f="the total is 3", F="The total is 3", r="it is shipped", e="no match", k="x")
    for name in ("ASSISTANT_ASK", "ASSISTANT_ASK_IDENTITY", "ASSISTANT_REPORT", "ASSISTANT_REPORT_WRITE",
                 "ASSISTANT_REFUSE", "ASSISTANT_NO_CHANGE", "ASSISTANT_CONFIRM", "ASSISTANT_FIX"):
        for template in getattr(P, name):
            assert not asks_confirmation(template.format(**filled)), (name, template)
    for template in P.ASSISTANT_REPORT_WRITE:  # a report before a proposal stays a report (text_user.reported)
        assert not _WRITE_VERB.search(template.split("{")[0].lower()), template
    assert all(asks_confirmation(t.format(c="cancel order X")) for t in P.ASSISTANT_PROPOSE)
    assert all(REFUSAL_CUE.search(t.format(r="it is shipped")) for t in P.ASSISTANT_REFUSE)  # the judge's cue


def test_the_checker_takes_a_record_by_its_name_not_any_text():
    row = '[{"sku": "ELE-34753", "product_name": "Ultra Speaker", "quantity": 1, "status": "pending"}]'
    earlier = [{"role": "user", "content": "Change the Ultra Speaker to 2."}, {"role": "tool", "content": row}]
    assert _states("I can change the Ultra Speaker on order X to 2. Shall I?", "sku", "ELE-34753", earlier)
    assert not _states("I can change the item on order X to 2. Shall I?", "sku", "ELE-34753", earlier)
    assert not _states("The order is pending. Shall I?", "sku", "ELE-34753", earlier)  # a status names nothing
    assert _states("Reason: changed mind. Shall I?", "reason", "changed_mind", [])
