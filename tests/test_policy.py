"""Policies as code: the checker catches each rule's violation, domain actions check their
preconditions inside one transaction, and rule-role dialogues follow the policy."""

import json

import pytest
from conftest import make_cfg
from toolturn.core.domains import prepare_domain
from toolturn.core.errors import ToolturnError
from toolturn.core.policy import GENERIC, load_policy_file, policy_for
from toolturn.core.policy_check import check_policy
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate
from toolturn.generate.stats import compute_stats

OWNED = {"addresses", "orders", "order_items", "payments", "returns", "customers"}


# ---- hand-written dialogues ---------------------------------------------------------------------
def _call(n: int, name: str, args: dict) -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": args}}]}


class Dialogue:
    """Builds a dialogue whose tool results are produced by a real sandbox of the domain."""

    def __init__(self, domain):
        self.domain, self.sandbox = domain, domain.env.open_sandbox()
        self.messages = [{"role": "system", "content": "policy"}]

    def user(self, text):
        self.messages.append({"role": "user", "content": text})
        return self

    def say(self, text):
        self.messages.append({"role": "assistant", "content": text})
        return self

    def call(self, name, **args):
        n = len(self.messages)
        self.messages.append(_call(n, name, args))
        self.last = self.sandbox.call(name, args)
        self.messages.append({"role": "tool", "tool_call_id": f"c{n}", "name": name, "content": self.last.content})
        return self

    def violations(self):
        d = self.domain
        return [v.rule for v in check_policy(d.rules, self.messages, 1, d.tools, d.schema, d.env)]


def _customer_with_pending_order(domain):
    row = domain.env.open_sandbox().conn.execute(
        "SELECT c.id, c.email, o.order_number, o.id FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.status = 'pending' ORDER BY o.id LIMIT 1").fetchone()
    return {"id": row[0], "email": row[1], "order": row[2], "order_id": row[3]}


def _other_customers_order(domain, customer_id, status="pending"):
    return domain.env.open_sandbox().conn.execute(
        "SELECT order_number, id FROM orders WHERE customer_id <> ? AND status = ? ORDER BY id LIMIT 1",
        (customer_id, status)).fetchone()


def _identified(retail, me):
    return Dialogue(retail).user(f"Hi, my email is {me['email']}.").call("find_customer_by_email", email=me["email"])


def test_a_compliant_dialogue_has_no_violation(retail):
    me = _customer_with_pending_order(retail)
    d = _identified(retail, me).call("get_order_details", customer_id=me["id"], order_number=me["order"])
    d.say(f"To confirm, I'm about to cancel order {me['order']}. Shall I go ahead?").user("Yes, please go ahead.")
    assert d.call("cancel_pending_order", customer_id=me["id"], order_number=me["order"]).last.ok
    d.say("Done: it is cancelled.")
    assert d.violations() == []


def test_access_before_identification_is_caught(retail):
    me = _customer_with_pending_order(retail)
    d = Dialogue(retail).user(f"What is the status of order {me['order']}?")
    d.call("get_order", id=me["order_id"])
    d.say("It is pending.")
    assert d.violations() == ["identity_required"]


def test_identification_with_a_value_the_user_never_gave_does_not_count(retail):
    me = _customer_with_pending_order(retail)
    d = Dialogue(retail).user("Cancel my order please, I won't tell you my email.")
    d.call("find_customer_by_email", email=me["email"])
    d.call("get_order_details", customer_id=me["id"], order_number=me["order"])
    d.say("It is pending.")
    assert "identity_required" in d.violations()


def test_another_customers_record_is_caught(retail):
    me = _customer_with_pending_order(retail)
    theirs = _other_customers_order(retail, me["id"])
    d = _identified(retail, me).user(f"And order {theirs[0]}?")
    d.call("get_order", id=theirs[1])
    d.say("That one is pending too.")
    assert d.violations() == ["foreign_record"]


def test_a_write_on_a_record_in_a_forbidden_state_is_caught(retail):
    me = _customer_with_pending_order(retail)
    shipped = retail.env.open_sandbox().conn.execute(
        "SELECT id, order_number FROM orders WHERE customer_id = ? AND status = 'shipped'", (me["id"],)).fetchone()
    if shipped is None:  # give this customer a shipped order through the generic tool, confirmed
        shipped = retail.env.open_sandbox().conn.execute(
            "SELECT id, order_number, customer_id FROM orders WHERE status = 'shipped' ORDER BY id LIMIT 1").fetchone()
        row = retail.env.open_sandbox().conn.execute(
            "SELECT email FROM customers WHERE id = ?", (shipped[2],)).fetchone()
        me = {"id": shipped[2], "email": row[0]}
    d = _identified(retail, me)
    d.say(f"To confirm: update order with id {shipped[0]}, status cancelled. Shall I proceed?").user("Yes, go ahead.")
    assert d.call("update_order", id=shipped[0], status="cancelled").last.ok  # the generic tool checks nothing
    d.say("Cancelled.")
    assert d.violations() == ["write_state"]


@pytest.mark.parametrize("variant", ["no_question", "no_yes", "change_not_stated", "yes_then_another_write"])
def test_a_write_without_confirmation_is_caught(retail, variant):
    me = _customer_with_pending_order(retail)
    d = _identified(retail, me)
    if variant == "no_question":
        d.say(f"I'll cancel order {me['order']} now.").user("Ok.")
    elif variant == "no_yes":
        d.say(f"Shall I cancel order {me['order']}?").user("Hmm, no, don't do that.")
    elif variant == "change_not_stated":
        d.say("Shall I cancel your order?").user("Yes, please go ahead.")
    else:
        d.say(f"Shall I cancel order {me['order']}?").user("Yes, please go ahead.")
        d.call("cancel_pending_order", customer_id=me["id"], order_number=me["order"])
        d.say("Done.").user("Thanks. What is the status now?")
    d.call("cancel_pending_order", customer_id=me["id"], order_number=me["order"])
    d.say("Done.")
    assert d.violations() == ["unconfirmed_write"]


def test_another_customers_private_data_in_a_reply_is_caught(retail):
    me = _customer_with_pending_order(retail)
    d = _identified(retail, me).user("Which customers are gold tier?")
    other = next(r for r in d.call("search_customers", tier="gold", max_results=3).last.value if r["id"] != me["id"])
    d.say(f"For example {other['email']}.")
    assert d.violations() == ["foreign_record", "foreign_data_disclosed"]


def test_bulk_disclosure_is_caught(retail):
    d = Dialogue(retail).user("List your products.")
    result = d.call("search_products", max_results=30).last
    d.say("Product ids: " + ", ".join(str(r["id"]) for r in result.value) + ".")
    assert d.violations() == ["bulk_disclosure"]
    d.messages[-1]["content"] = "Product ids: " + ", ".join(str(r["id"]) for r in result.value[:5]) + "."
    assert d.violations() == []


def test_the_policy_text_comes_from_the_rules(retail):
    text = retail.rules.text()
    assert text == retail.policy
    for rule in retail.rules.rules():
        assert rule.text() in text
    assert "You serve Northwind Goods is" not in text


# ---- domain actions -----------------------------------------------------------------------------
def test_an_action_checks_its_preconditions_inside_its_transaction(retail):
    sandbox = retail.env.open_sandbox()
    conn = sandbox.conn
    cid, number, oid = conn.execute("SELECT customer_id, order_number, id FROM orders WHERE status = 'shipped' "
                                    "ORDER BY id LIMIT 1").fetchone()
    before = sandbox.state_hash()
    result = sandbox.call("cancel_pending_order", {"customer_id": cid, "order_number": number})
    assert not result.ok and "is shipped; only pending orders can be cancelled" in result.content
    result = sandbox.call("cancel_pending_order", {"customer_id": cid + 1, "order_number": number})
    assert not result.ok and "does not belong to this account" in result.content
    assert sandbox.state_hash() == before
    cid, number, oid = conn.execute("SELECT customer_id, order_number, id FROM orders WHERE status = 'pending' "
                                    "ORDER BY id LIMIT 1").fetchone()
    result = sandbox.call("cancel_pending_order", {"customer_id": cid, "order_number": number})
    assert result.ok and result.value["status"] == "cancelled"
    assert {r[0] for r in conn.execute("SELECT status FROM payments WHERE order_id = ? AND status <> 'failed'",
                                       (oid,))} == {"refunded"}


def test_an_exchange_is_one_transaction_of_several_writes(retail):
    sandbox = retail.env.open_sandbox()
    conn = sandbox.conn
    cid, number, sku, new_sku = conn.execute(
        "SELECT o.customer_id, o.order_number, p.sku, n.sku FROM order_items i JOIN orders o ON o.id = i.order_id "
        "JOIN products p ON p.id = i.product_id JOIN products n ON n.category = p.category AND n.id <> p.id "
        "AND n.status = 'active' AND n.stock_quantity > 0 WHERE o.status = 'delivered' "
        "AND date(o.placed_at) >= date('2026-01-01', '-30 days') ORDER BY i.id LIMIT 1").fetchone()
    counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("orders", "returns", "payments")]
    result = sandbox.call("exchange_delivered_item", {"customer_id": cid, "order_number": number, "sku": sku,
                                                      "new_sku": new_sku})
    assert result.ok and result.value["new_order_number"].startswith("ORD-N") and result.value["status"] == "pending"
    after = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("orders", "returns", "payments")]
    assert after == [n + 1 for n in counts]
    before = sandbox.state_hash()  # the same exchange again: the item is returned already, nothing changes
    assert not sandbox.call("exchange_delivered_item", {"customer_id": cid, "order_number": number, "sku": sku,
                                                        "new_sku": new_sku}).ok
    assert sandbox.state_hash() == before


# ---- policy files -------------------------------------------------------------------------------
def test_a_policy_file_extends_the_generic_policy(retail, tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("notes: [Never discuss invoices.]\nbulk_limit: 5\nprivate: {customers: [email]}\n"
                 "identity: {table: customers, key: customer_id, tools: {search_customers: email}}\n"
                 "states: [{table: orders, column: status, allowed: [pending], tools: [update_order]}]\n")
    tables = {n: {c.param for c in t.columns} for n, t in retail.schema.tables.items()}
    policy = load_policy_file(f, GENERIC, tables, {t.name for t in retail.tools})
    assert policy.bulk_limit == 5 and policy.identity.tools == {"search_customers": "email"}
    assert "- Never discuss invoices." in policy.text() and "'pending'" in policy.text()
    for bad, says in [("states: [{table: nope, column: status, allowed: [x]}]", "unknown table 'nope'"),
                      ("bulk_limit: 0", "bulk_limit must be a positive integer"),
                      ("colour: red", "expected a mapping with keys"),
                      ("identity: {table: customers, tools: {no_such_tool: email}}", "unknown tool")]:
        f.write_text(bad)
        with pytest.raises(ToolturnError, match=says):
            load_policy_file(f, GENERIC, tables, {t.name for t in retail.tools})
    with pytest.raises(ToolturnError, match="cannot read"):
        policy_for(retail, str(tmp_path / "missing.yaml"))


# ---- generation ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def retail_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy_runs")
    return {p: RunDir.existing(generate(make_cfg(f"pipeline={p}", "domain=retail", "roles=rule", "num_dialogues=50",
                                                 "policy=report", f"out_dir={root / p}")))
            for p in ("user_oriented", "task_oriented")}


def _calls(record):
    for i, m in enumerate(record["messages"]):
        for c in m.get("tool_calls") or []:
            yield i, c["function"]["name"], c["function"]["arguments"]


def test_rule_dialogues_follow_the_policy(retail, retail_runs):
    run = retail_runs["user_oriented"]
    records = run.records()
    tools = {t.name: t for t in retail.tools}
    writes = touching = 0
    for r in records:
        assert "policy" not in r["meta"]  # policy=report: nothing flagged
        assert check_policy(retail.rules, r["messages"], 1, retail.tools, retail.schema, retail.env) == []
        identified = None
        for i, name, args in _calls(r):
            owned = tools[name].table in OWNED or "customer_id" in args
            if name == "find_customer_by_email":
                identified = i
            elif owned:
                touching += identified is None or 0
                assert identified is not None and identified < i, (r["id"], name)
            if tools[name].effect == "write":
                writes += 1
                user = max(j for j in range(i) if r["messages"][j]["role"] == "user")
                ask = max(j for j in range(user) if r["messages"][j]["role"] == "assistant"
                          and r["messages"][j]["content"])
                assert r["messages"][user]["content"].startswith(("Yes", "Correct", "Sure", "Yep"))
                assert "?" in r["messages"][ask]["content"] and args["order_number"] in r["messages"][ask]["content"]
    assert writes >= 10 and touching == 0
    stats = compute_stats(run)
    assert stats["policy"]["violations"] == {} and stats["policy"]["refusal_share"] >= 0.10
    assert audit_run(run).ok


def test_refusal_tasks_leave_the_database_unchanged_and_are_explained(retail, retail_runs):
    refusals = 0
    for run in retail_runs.values():
        for r in run.records():
            for t in r["meta"]["tasks"]:
                refused = [st for st in t["gold"]["subtasks"] if st["kind"] == "refuse"]
                if not refused:
                    continue
                refusals += 1
                assert all(retail.env.tools[s["tool"]].effect == "read" for s in t["gold"]["steps"])
                said = " ".join(m["content"] for m in r["messages"] if m["role"] == "assistant")
                assert any(w in said for w in ("can't", "unable", "not possible", "not able"))
            if all(any(st["kind"] == "refuse" for st in t["gold"]["subtasks"]) for t in r["meta"]["tasks"]):
                assert r["meta"]["gold_end_state"] == retail.env.open_sandbox().state_hash()
    assert refusals >= 10


def test_the_user_oriented_gap_in_user_turns_per_task_holds(retail_runs):
    uo, to = (compute_stats(retail_runs[p])["user_turns_per_task"] for p in ("user_oriented", "task_oriented"))
    assert uo > to * 1.3


@pytest.mark.parametrize("mode", ["enforce", "report"])
def test_violations_are_dropped_or_flagged_and_counted(tmp_path, retail, mode):
    """The retail database as a bring-your-own one with schema tasks, plus a policy file that asks for
    identification: the schema tasks read orders without it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("identity: {table: customers, key: customer_id, tools: {search_customers: email}}\n")
    out = generate(make_cfg("domain=sqlite", f"domain.path={retail.db_path}", "domain.name=shop", "num_dialogues=8",
                            f"policy={mode}", f"policy.file={policy}", f"out_dir={tmp_path / 'run'}",
                            "max_drop_streak=400"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["policy"]["violations"].get("identity_required", 0) > 0
    records = RunDir.existing(out).records()
    if mode == "enforce":
        assert stats["drops"]["reasons"].get("policy_identity_required", 0) > 0
        assert all("policy" not in r["meta"] for r in records)
    else:
        assert stats["policy"]["flagged_dialogues"] > 0
        assert any(v["rule"] == "identity_required" for r in records for v in r["meta"].get("policy", {})
                   .get("violations", []))
