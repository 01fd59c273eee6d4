"""What telecom customers ask for: the service scenarios, each a pick query over the current state, a gold
plan over the domain's actions and the requests in the customer's words (core/tasks/service.py)."""

from __future__ import annotations

from toolturn.core.tasks.service import Part, R, S, Scenario, Service, Step

from .phrasing import ASKS, CHANGES, FACTS, REASONS, RECORDS, TERMS
from .policy import POLICY

_ME = "(:email IS NULL OR c.email = :email)"
_SEL = 'SELECT c.email AS "email address", l.phone_number AS "phone number"'
_FROM = "FROM lines l JOIN customers c ON c.id = l.customer_id"
_OVERDUE = "EXISTS (SELECT 1 FROM bills b WHERE b.customer_id = c.id AND b.status = 'overdue')"
_CID = R(0, "customer_id")
_DETAILS = Step("get_line_details", {"customer_id": _CID, "phone_number": S("phone number")})

# The default task mix (`domain.task_mix` overrides it; see core/domains/retail/tasks.py).
TASK_MIX = {"plan_info": 1.0, "line_status": 1.0, "change_plan": 0.5, "enable_roaming": 0.5, "reactivate_line": 0.5}

SERVICE = Service(
    changes=CHANGES, facts=FACTS, terms=TERMS, asks=ASKS, records=RECORDS, reasons=REASONS,
    builtin_reasons=dict(POLICY.reasons), task_mix=TASK_MIX,
    identify=("find_customer_by_email", "email"), slot="email address", owner_key="customer_id",
    scenarios=(
        Scenario("plan_info", "public", 'SELECT name AS "plan" FROM plans ORDER BY id',
                 (Step("search_plans", {"name": S("plan")}),),
                 (Part(("tell me the monthly fee of the {plan} plan", "tell me what the {plan} plan costs per month",
                        "let me know how much {plan} is a month"), (0,), values=("plan",),
                       report=(("monthly fee", 0, 0, "monthly_fee"),)),)),
        Scenario("line_status", "read", f"{_SEL} {_FROM} WHERE {_ME} ORDER BY l.id", (_DETAILS,),
                 (Part(("tell me which plan my line is on", "check what plan my line has", "look up my line's plan"),
                       (0, 1), ids=("phone number",),
                       report=(("plan", 1, "plan"), ("line status", 1, "status"))),)),
        Scenario("change_plan", "write",
                 f'{_SEL}, p.name AS "plan" {_FROM} JOIN plans p ON p.id <> l.plan_id AND p.is_available = 1 '
                 f"WHERE l.status = 'active' AND {_ME} ORDER BY l.id, p.id",
                 (_DETAILS, Step("search_plans", {"name": S("plan")}),  # its fee, for the customer to decide
                  Step("change_line_plan", {"customer_id": _CID, "phone_number": S("phone number"),
                                            "plan_name": S("plan")})),
                 (Part(("move my line to the {plan} plan", "switch my line over to {plan}",
                        "put my line on the {plan} plan"),
                       (0, 1, 2, 3), ids=("phone number",), values=("plan",),
                       report=(("monthly fee", 3, "monthly_fee"),)),), write=3),
        Scenario("enable_roaming", "write",
                 f"{_SEL} {_FROM} WHERE l.status = 'active' AND l.roaming_enabled = 0 AND c.account_status = 'active' "
                 f"AND {_ME} ORDER BY l.id",
                 (_DETAILS, Step("enable_roaming", {"customer_id": _CID, "phone_number": S("phone number")})),
                 (Part(("turn on roaming for my line; I'm travelling next week",
                        "enable roaming on my line before my trip",
                        "switch on roaming for my line, I'm going abroad"), (0, 1, 2), ids=("phone number",),
                       report=(("line status", 2, "status"),)),), write=2),
        Scenario("reactivate_line", "write",
                 f"{_SEL} {_FROM} WHERE l.status = 'suspended' AND NOT {_OVERDUE} AND {_ME} ORDER BY l.id",
                 (_DETAILS, Step("reactivate_line", {"customer_id": _CID, "phone_number": S("phone number")})),
                 (Part("reactivate my suspended line", (0, 1, 2), ids=("phone number",),
                       report=(("line status", 2, "status"),)),), write=2),
        Scenario("refuse_plan_change_inactive", "refuse",
                 f'{_SEL}, l.status AS "status", p.name AS "plan" {_FROM} JOIN plans p ON p.id <> l.plan_id '
                 f"AND p.is_available = 1 WHERE l.status <> 'active' AND {_ME} ORDER BY l.id, p.id", (_DETAILS,),
                 (Part("move my line to the {plan} plan", (0, 1), kind="refuse", ids=("phone number",),
                       values=("plan",), refusal="state", report=(("line status", 1, "status"),)),)),
        Scenario("refuse_reactivate_overdue", "refuse",
                 f"{_SEL} {_FROM} WHERE l.status = 'suspended' AND {_OVERDUE} AND {_ME} ORDER BY l.id", (_DETAILS,),
                 (Part("reactivate my suspended line", (0, 1), kind="refuse", ids=("phone number",),
                       refusal="overdue"),)),
        Scenario("refuse_foreign_line", "refuse",
                 f"{_SEL} FROM customers c JOIN lines l ON l.customer_id <> c.id WHERE l.status = 'active' AND {_ME} "
                 "ORDER BY c.id, l.id",
                 (Step("get_line_details", {"customer_id": _CID, "phone_number": S("phone number")},
                       expect_error=True),),
                 (Part("move line {phone number} to another plan", (0, 1), kind="refuse", values=("phone number",),
                       refusal="ownership"),)),
        Scenario("refuse_unidentified", "refuse",
                 'SELECT p.name AS "plan", l.phone_number AS "phone number" FROM plans p JOIN lines l '
                 "ON l.plan_id = p.id WHERE l.status = 'active' ORDER BY l.id",
                 (Step("search_plans", {"name": S("plan")}),),
                 (Part("tell me the monthly fee of the {plan} plan", (0,), values=("plan",),
                       report=(("monthly fee", 0, 0, "monthly_fee"),)),
                  Part("enable roaming on my line {phone number}", (),
                       kind="refuse", values=("phone number",), refusal="identity", withhold=("email address",)))),
    ),
)
