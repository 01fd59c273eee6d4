"""Policies as code: the checker catches each rule's violation, domain actions check their
preconditions inside one transaction, and rule-role dialogues follow the policy."""

import json

import pytest
from conftest import cli, make_cfg
from toolturn.core.domains import prepare_domain
from toolturn.core.errors import ToolturnError
from toolturn.core.policy import GENERIC, domain_facts, load_policy_file, policy_for
from toolturn.core.policy_check import check_policy
from toolturn.core.roles.phrasing import USER_AFFIRM
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


def _item_of_an_order_in(retail, status):
    row = retail.env.open_sandbox().conn.execute(
        "SELECT c.id, c.email, i.id FROM order_items i JOIN orders o ON o.id = i.order_id "
        "JOIN customers c ON c.id = o.customer_id WHERE o.status = ? ORDER BY i.id LIMIT 1", (status,)).fetchone()
    return {"id": row[0], "email": row[1]}, row[2]


def _confirmed(d, name, **args):
    """The write `name(**args)`, proposed with every value and confirmed by the user first."""
    stated = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in args.items())
    d.say(f"To confirm: {name.replace('_', ' ')} with {stated}. Shall I proceed?").user("Yes, go ahead.")
    assert d.call(name, **args).last.ok, d.last.content
    return d.say("Done.")


@pytest.mark.parametrize("status, write, allowed", [
    ("processing", lambda item: ("update_order_item", {"id": item, "quantity": 9}), False),
    ("processing", lambda item: ("delete_order_item", {"id": item}), False),
    ("shipped", lambda item: ("update_order_item", {"id": item, "quantity": 2}), False),
    ("pending", lambda item: ("update_order_item", {"id": item, "quantity": 2}), True),
    ("pending", lambda item: ("create_return", {"rma_number": "RMA-99001", "order_item_id": item, "quantity": 1,
                                                "reason": "damaged", "status": "requested",
                                                "requested_at": "2026-01-01T12:00"}), False),
    ("delivered", lambda item: ("create_return", {"rma_number": "RMA-99002", "order_item_id": item, "quantity": 1,
                                                  "reason": "damaged", "status": "requested",
                                                  "requested_at": "2026-01-01T12:00"}), True),
])
def test_a_write_on_a_record_of_an_order_in_a_forbidden_state_is_caught(retail, status, write, allowed):
    """State rules follow foreign keys from the written row to the order whose status governs it, for schema
    tools (an item or a return of the order) as for the domain actions."""
    me, item = _item_of_an_order_in(retail, status)
    name, args = write(item)
    d = _confirmed(_identified(retail, me), name, **args)
    assert d.violations() == ([] if allowed else ["write_state"])


def test_a_write_that_moves_an_item_into_a_frozen_order_is_caught(retail):
    """The written values count too: an item of a pending order moved into the same customer's processing one."""
    row = retail.env.open_sandbox().conn.execute(
        "SELECT c.id, c.email, i.id, frozen.id FROM order_items i JOIN orders o ON o.id = i.order_id "
        "JOIN customers c ON c.id = o.customer_id JOIN orders frozen ON frozen.customer_id = c.id "
        "WHERE o.status = 'pending' AND frozen.status = 'processing' ORDER BY i.id LIMIT 1").fetchone()
    d = _confirmed(_identified(retail, {"id": row[0], "email": row[1]}), "update_order_item", id=row[2],
                   order_id=row[3])
    assert d.violations() == ["write_state"]


@pytest.mark.parametrize("messages, start, says", [
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "",
      "tool_calls": [{"type": "function", "function": {"name": "get_order", "arguments": {"id": 1}}}]}], 0,
     "message 1, tool call 0: expected {id, function: {name, arguments}}"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"arguments": {}}}]}], 0,
     "message 0, tool call 0"),
    ([{"role": "tool", "content": "{}"}], 0, "message 0: a tool message needs a tool_call_id"),
    ([{"role": "user", "content": ["a", "list"]}], 0, "message 0: content must be text or null"),
    ([{"content": "no role"}], 0, "messages must be a list of chat messages"),
    ("not a list", 0, "messages must be a list of chat messages"),
    ([{"role": "user", "content": "hi"}], 5, "start must be a message index in [0, 1]"),
])
def test_check_policy_names_what_it_cannot_read(retail, messages, start, says):
    with pytest.raises(ToolturnError) as err:
        check_policy(retail.rules, messages, start, retail.tools, retail.schema, retail.env)
    assert says in str(err.value)


# ---- policy files -------------------------------------------------------------------------------
def test_a_policy_file_extends_the_generic_policy(retail, tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("notes: [Never discuss invoices.]\nbulk_limit: 5\nprivate: {customers: [email]}\n"
                 "identity: {table: customers, key: customer_id, tools: {search_customers: email}}\n"
                 "states: [{table: orders, column: status, allowed: [pending], tools: [update_order], "
                 "tables: [order_items]}]\n")
    policy = load_policy_file(f, GENERIC, domain_facts(retail))
    assert policy.bulk_limit == 5 and policy.identity.tools == {"search_customers": "email"}
    assert policy.states[-1].tables == ("order_items",) and policy.states[-1].governs("delete_order_item", "order_items")
    assert "- Never discuss invoices." in policy.text() and "'pending'" in policy.text()


@pytest.mark.parametrize("content, says", [
    ("states: [{table: nope, column: status, allowed: [x]}]", "unknown table 'nope'"),
    ("private: {clients: [email]}", "private names unknown table 'clients'"),
    ("private: {customers: [emial]}", "unknown column 'emial' of customers (did you mean 'email'?)"),
    ("bulk_limit: 0", "bulk_limit must be a positive integer"),
    ("bulk_limit: true", "bulk_limit must be a positive integer"),
    ("colour: red", "the file has unknown key 'colour'"),
    ("- a list", "the file must be a mapping"),
    ("identity: {table: customers, tools: {no_such_tool: email}}", "unknown tool 'no_such_tool'"),
    ("identity: {table: customers, tools: {find_customer_by_email: emial}}",
     "find_customer_by_email has no argument 'emial' (did you mean 'email'?)"),
    ("identity: {table: customers, key: client_id, tools: {find_customer_by_email: email}}",
     "identity.key 'client_id' is a column of no table"),
    ("identity: {table: customers, tools: {find_customer_by_email: email}, whom: x}", "unknown key 'whom'"),
    ("states: [{table: orders, column: status, alowed: [pending]}]", "did you mean 'allowed'?"),
    ("states: [{table: orders, column: status, allowed: pending}]", "states[0].allowed must be a non-empty list"),
    ("states: [{table: orders, column: status, allowed: [x], tables: [products]}]",
     "a products record belongs to no orders record"),
    ("reasons: {state: 'order {order number} is {colour}'}", "unknown placeholder {colour}"),
    ("reasons: {state: 'order {0}'}", "only plain {name} placeholders"),
    ("reasons: {state: 'order {status!r:>9}'}", "only plain {name} placeholders"),
    ("reasons: {state: 'order {status'}", "not a valid template"),
    ("reasons: {weather: 'it rains'}", "no refusal task of this domain gives that reason"),
    ("notes: [1, 2]", "notes must be a non-empty list"),
    ("preamble: [x]", "preamble must be non-empty text"),
    ("identity: {table: [x]", "not YAML/JSON"),
])
def test_a_bad_policy_file_is_one_line_naming_the_problem(retail, tmp_path, content, says):
    f = tmp_path / "policy.yaml"
    f.write_text(content)
    with pytest.raises(ToolturnError) as err:
        policy_for(retail, str(f))
    assert says in str(err.value) and "\n" not in str(err.value) and str(f) in str(err.value)


def test_a_policy_file_that_is_not_a_readable_text_file_is_one_line(retail, tmp_path):
    binary = tmp_path / "policy.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    for path, says in [(binary, "not UTF-8 text"), (tmp_path / "missing.yaml", "cannot read"),
                       (tmp_path, "cannot read"), (123, "must be the path of a YAML or JSON file")]:
        with pytest.raises(ToolturnError, match=says):
            policy_for(retail, path)


def test_every_reason_of_a_builtin_domain_names_only_values_its_refusal_tasks_fill(tmp_path):
    for name in ("retail", "airline", "telecom"):
        domain = prepare_domain(make_cfg(f"domain={name}").domain, tmp_path, 0)
        assert domain.refusal_slots, name
        for rid, template in domain.rules.reasons.items():
            assert rid in domain.refusal_slots, (name, rid)
            # what Policy.reason does with a refusal task's values: every placeholder is filled
            domain.rules.reason(rid, **{slot: "x" for slot in domain.refusal_slots[rid]})


def test_a_bad_policy_file_stops_the_command_before_anything_runs(tmp_path):
    policy = tmp_path / "policy.yaml"
    for content, says in [("private: {clients: [email]}", "unknown table 'clients'"),
                          ("reasons: {state: 'x {nope}'}", "unknown placeholder {nope}")]:
        policy.write_text(content)
        out = tmp_path / "run"  # the same dir each time: a set-up that failed binds no setting of a later run
        result = cli("toolturn-generate", "num_dialogues=2", f"policy.file={policy}", f"out_dir={out}",
                     "logger=none", "progress=false")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error: ") and says in result.stderr and len(result.stderr.splitlines()) == 1
        assert not list(out.glob("shards/part-*")) and not (out / "config.yaml").exists()
    policy.write_bytes(b"\xff\xfe\x00")
    for value, says in [(str(policy), "not UTF-8 text"), ("123", "policy.file must be null or the path")]:
        result = cli("toolturn-generate", "num_dialogues=2", f"policy.file={value}", f"out_dir={tmp_path / 'r2'}",
                     "logger=none", "progress=false")
        assert result.returncode == 2 and says in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
        assert not (tmp_path / "r2").exists()  # checked before the run dir is made


def test_the_policy_files_content_is_part_of_the_runs_identity(tmp_path):
    policy, out = tmp_path / "policy.yaml", tmp_path / "run"
    policy.write_text("bulk_limit: 5\n")
    cfg = lambda: make_cfg("domain=retail", "num_dialogues=3", f"policy.file={policy}", f"out_dir={out}")  # noqa: E731
    generate(cfg())
    policy.write_text("bulk_limit: 6\n")  # edited between a kill and the resume
    with pytest.raises(ToolturnError, match="different policy.file content"):
        generate(cfg())
    policy.write_text("bulk_limit: 5\n")
    generate(cfg())  # the same content resumes
    assert len(RunDir(out).records()) == 3


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
                assert r["messages"][user]["content"] in USER_AFFIRM  # the rule user's yes, nothing else
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
