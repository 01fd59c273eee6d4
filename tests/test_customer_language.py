"""Issue 15's goals and language: one customer's coherent visit, changes proposed in the customer's terms,
one sentence-joiner, reads never phrased as writes."""

import asyncio
import json
import random
import re
import string
from collections import Counter

import pytest
from conftest import make_cfg
from toolturn.core.judges.execution import REFUSAL_CUE
from toolturn.core.policy_check import _states
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.acts import asks_confirmation
from toolturn.generate.quality import repeated_questions
from toolturn.core.domains.registry import REGISTRY
from toolturn.core.judges.facts import mentions
from toolturn.core.roles.text_user import _WRITE_VERB, _says, questions
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


def test_a_visit_never_asks_what_the_customer_was_just_told(dialogues):
    """No question whose every answer an earlier task of the visit gave about the same record (the status and
    total of an order checked before a return, asked for again)."""
    asked = 0
    for record in dialogues:
        questions, repeated = repeated_questions(record)
        asked += questions
        assert not repeated, [(t["template"], t["gold"]["facts"]) for t in repeated]
    assert asked >= 5


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
                 "ASSISTANT_REPORT_NEXT", "ASSISTANT_REFUSE", "ASSISTANT_NO_CHANGE", "ASSISTANT_CONFIRM",
                 "ASSISTANT_CONFIRM_WRITE", "ASSISTANT_FIX", "ASSISTANT_HANDBACK", "ASSISTANT_ANCHOR"):
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


@pytest.mark.parametrize("name", ["retail", "airline", "telecom"])
def test_a_services_own_words_keep_every_readers_tests(name):
    """A domain's own asks name their slot in a question the text user finds; its notes ask nothing; its ways to
    give a refusal reason carry exactly the policy reason's values; all of it composes with the shared leads."""
    service = REGISTRY.domain(name).service
    for slot, asks in service.asks.items():
        for ask in asks:
            text = P.fill(ask, s=slot)
            assert any(_says(q, slot) for q in questions(text)) and not asks_confirmation(text), (slot, ask)
    for notes in service.notes.values():
        assert not any(asks_confirmation(n) for n in notes)
    for reason, forms in service.reasons.items():
        builtin = _fields(service.builtin_reasons[reason])
        assert all(_fields(form) == builtin for form in forms), reason
    params = {a.name: set(a.parameters["properties"]) for a in REGISTRY.domain(name).actions}
    for tool, ways in service.changes.items():  # every way to propose a change states the same arguments
        assert len(ways) >= 5 and len({frozenset(_fields(w) & params[tool]) for w in ways}) == 1, tool


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


# the value a customer needs to decide on a change, as the write then reports it
DECIDES = {"cancel_pending_order": "refund_amount", "modify_pending_order_item": "total",
           "return_delivered_item": "refund_amount", "exchange_delivered_item": "total",
           "cancel_booking": "refund_amount", "change_line_plan": "monthly_fee"}
WRITES_ONLY = {"retail": "{product_info: 0, order_status: 0, my_orders: 0}",
               "airline": "{flight_status: 0, booking_status: 0}", "telecom": "{plan_info: 0, line_status: 0}"}


@pytest.mark.parametrize("name", ["retail", "airline", "telecom"])
def test_a_proposal_states_what_the_customer_decides_on(name, tmp_path):
    """A cancellation or return states the refund, a quantity change the new total, an exchange the new price, a
    plan change the new monthly fee: each the number the write then reports."""
    from toolturn.core.domains import prepare_domain
    cfg = make_cfg(f"domain={name}", f"domain.task_mix={WRITES_ONLY[name]}", "policy.refusal_share=0")
    factory = DialogueFactory(prepare_domain(cfg.domain, tmp_path, seed=0), cfg)
    checked = set()
    for i in range(12):
        messages = asyncio.run(factory.make(i)).record["messages"]
        for k, m in enumerate(messages):
            call = (m.get("tool_calls") or [{}])[0].get("function", {})
            if call.get("name") in DECIDES:
                proposal = next(p["content"] for p in reversed(messages[:k]) if p["role"] == "assistant" and p["content"])
                result = json.loads(messages[k + 1]["content"])
                assert asks_confirmation(proposal) and mentions(proposal, result[DECIDES[call["name"]]]), proposal
                checked.add(call["name"])
    assert checked >= {t for t in DECIDES if t in {a.name for a in factory.domain.tools}} - {"exchange_delivered_item"}


def test_a_discontinued_product_is_said_to_be_so(retail):
    only_products = ("{order_status: 0, my_orders: 0, cancel_order: 0, change_address: 0, change_quantity: 0, "
                     "return_item: 0, exchange_item: 0}")
    factory = DialogueFactory(retail, make_cfg("domain=retail", f"domain.task_mix={only_products}",
                                               "policy.refusal_share=0"))
    seen = Counter()
    for i in range(40):
        messages = asyncio.run(factory.make(i)).record["messages"]
        found = [json.loads(m["content"])[0] for m in messages if m["role"] == "tool" and m["name"] == "search_products"]
        said = " ".join(m["content"] for m in messages if m["role"] == "assistant").lower()
        status = found[0]["status"]
        seen[status] += 1
        assert ("discontinued" in said) == (status == "discontinued"), said
    assert seen["discontinued"] >= 1 and seen["active"] >= 1


def test_the_task_mix_is_the_domains_default_under_the_configs_weights():
    from toolturn.core.errors import ToolturnError
    from toolturn.core.tasks.service import resolve_task_mix
    service = REGISTRY.domain("retail").service
    mix = resolve_task_mix(service, "retail", {"my_orders": 2})
    assert mix["my_orders"] == 2.0 and mix["product_info"] == service.task_mix["product_info"]
    assert set(mix) == {s.name for s in service.scenarios}
    for name in REGISTRY.names():  # a domain's defaults name its own kinds
        assert set(REGISTRY.domain(name).service.task_mix) <= {s.name for s in REGISTRY.domain(name).service.scenarios}
    with pytest.raises(ToolturnError, match=r"unknown task kind 'product_inf' for retail \(did you mean 'product_info'\?\)"):
        resolve_task_mix(service, "retail", {"product_inf": 1})
    with pytest.raises(ToolturnError, match=r"domain.task_mix.cancel_order must be a number >= 0, got -1"):
        resolve_task_mix(service, "retail", {"cancel_order": -1})


def test_a_kind_weighted_zero_is_never_drawn_and_the_rest_still_are(retail):
    factory = DialogueFactory(retail, make_cfg("domain=retail", "domain.task_mix={product_info: 0, my_orders: 0}"))
    kinds = Counter(t["template"].removesuffix("_declined") for i in range(20)
                    for t in asyncio.run(factory.make(i)).record["meta"]["tasks"])
    assert not kinds["product_info"] and not kinds["my_orders"] and kinds["order_status"] and kinds["cancel_order"]
