"""Built-in domain: a mobile telecom carrier (accounts, lines, plans, bills, usage, tickets)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from toolturn.core.policy import Identity, Policy, StateRule
from toolturn.core.tasks.service import Part, R, S, Scenario, Service, Step

from ._seed import (
    days_since_reference,
    digits,
    iso_datetime,
    iso_day,
    iso_moment,
    make_generators,
    moment,
    money,
    people,
    unique,
    us_phone,
    weighted,
    write_database,
)
from .actions import action, exists, in_state, owned, param

DESCRIPTION = (
    "Brightwave Mobile is a US mobile carrier that sells prepaid, postpaid, family and business "
    "plans and bills its account holders monthly for their phone lines."
)

POLICY = Policy(
    name="telecom",
    preamble="You are a customer-service assistant for Brightwave Mobile.",
    identity=Identity(table="customers", key="customer_id", tools={"find_customer_by_email": "email"},
                      who="account holder", by="the email address on the account; a phone number alone is not "
                      "enough", records="an account, its lines, bills or tickets"),
    states=(StateRule("lines", "status", ("active",), ("change_line_plan", "enable_roaming"),
                      "Plan changes are allowed only for 'active' lines and only to plans that are currently "
                      "available; roaming can be enabled only on active lines of customers whose account status is "
                      "'active'."),
            StateRule("lines", "status", ("suspended",), ("reactivate_line",),
                      "Suspended lines may be reactivated only when the customer has no overdue bill.")),
    private={"customers": ("email", "first_name", "last_name", "billing_address", "date_of_birth"),
             "lines": ("phone_number",), "devices": ("imei",), "support_tickets": ("ticket_number",)},
    reasons={"identity": "I can only discuss or change an account after verifying the account holder with the "
                         "email address on the account",
             "state": "line {phone number} is {status}, and only active lines can change plans",
             "overdue": "line {phone number} can't be reactivated while the account has an overdue bill",
             "ownership": "line {phone number} is not on your account, so I can't access or change it"},
    notes=("Do not waive, discount or re-date bills; explain charges from the recorded bill and usage data.",
           "Open a support ticket for network or device faults you cannot resolve, with a clear subject and category.",
           "If a tool call fails or returns an error, say so honestly; never claim an action succeeded when it did not.",
           "Be concise and factual; never invent plans, prices, balances or usage figures."),
)

_LINE = {"customer_id": param("integer", "id of the verified account holder"),
         "phone_number": param("string", "the line's phone number")}
_OWN_LINE = (exists("lines", "phone_number", "line"), owned("lines", "phone_number", "customer_id", "line"))
_LINE_RESULT = ("SELECT l.phone_number, l.customer_id, l.status, l.roaming_enabled, p.name AS plan, "
                "p.monthly_fee FROM lines l JOIN plans p ON p.id = l.plan_id WHERE l.phone_number = :phone_number")

ACTIONS = [
    action("find_customer_by_email", "Identify the account holder: find the account by the email address they give.",
           "customers", {"email": param("string", "the account's email address")},
           "SELECT id AS customer_id, email, first_name, last_name, account_status FROM customers "
           "WHERE email = :email COLLATE NOCASE"),
    action("get_line_details", "A line of the verified account holder with its plan.", "lines", _LINE, _LINE_RESULT,
           checks=_OWN_LINE),
    action("change_line_plan", "Move an active line of the verified account holder to another available plan.",
           "lines", {**_LINE, "plan_name": param("string", "the exact name of the new plan")}, _LINE_RESULT,
           checks=_OWN_LINE + (in_state("lines", "phone_number", "status", ("active",), "line", "changed"),
                               "SELECT 'plan ' || :plan_name || ' is not available' WHERE NOT EXISTS "
                               "(SELECT 1 FROM plans WHERE name = :plan_name AND is_available = 1)"),
           statements=("UPDATE lines SET plan_id = (SELECT id FROM plans WHERE name = :plan_name) "
                       "WHERE phone_number = :phone_number",)),
    action("enable_roaming", "Enable roaming on an active line of an active account.", "lines", _LINE, _LINE_RESULT,
           checks=_OWN_LINE + (in_state("lines", "phone_number", "status", ("active",), "line", "given roaming"),
                               "SELECT 'roaming needs an active account; this one is ' || account_status FROM "
                               "customers WHERE id = :customer_id AND account_status <> 'active'"),
           statements=("UPDATE lines SET roaming_enabled = 1 WHERE phone_number = :phone_number",)),
    action("reactivate_line", "Reactivate a suspended line of an account without overdue bills.", "lines", _LINE,
           _LINE_RESULT,
           checks=_OWN_LINE + (in_state("lines", "phone_number", "status", ("suspended",), "line", "reactivated"),
                               "SELECT 'the account has an overdue bill; the line cannot be reactivated' WHERE EXISTS "
                               "(SELECT 1 FROM bills WHERE customer_id = :customer_id AND status = 'overdue')"),
           statements=("UPDATE lines SET status = 'active' WHERE phone_number = :phone_number",)),
]

_ME = "(:email IS NULL OR c.email = :email)"
_SEL = 'SELECT c.email AS "email address", l.phone_number AS "phone number"'
_FROM = "FROM lines l JOIN customers c ON c.id = l.customer_id"
_OVERDUE = "EXISTS (SELECT 1 FROM bills b WHERE b.customer_id = c.id AND b.status = 'overdue')"
_CID = R(0, "customer_id")
_DETAILS = Step("get_line_details", {"customer_id": _CID, "phone_number": S("phone number")})

SERVICE = Service(
    identify=("find_customer_by_email", "email"), slot="email address", owner_key="customer_id",
    scenarios=(
        Scenario("plan_info", "public", 'SELECT name AS "plan" FROM plans ORDER BY id',
                 (Step("search_plans", {"name": S("plan")}),),
                 (Part("tell me the monthly fee of the {plan} plan", (0,), values=("plan",),
                       report=(("monthly fee", 0, 0, "monthly_fee"),)),)),
        Scenario("line_status", "read", f"{_SEL} {_FROM} WHERE {_ME} ORDER BY l.id", (_DETAILS,),
                 (Part("tell me which plan my line is on", (0, 1), ids=("phone number",),
                       report=(("plan", 1, "plan"), ("line status", 1, "status"))),)),
        Scenario("change_plan", "write",
                 f'{_SEL}, p.name AS "plan" {_FROM} JOIN plans p ON p.id <> l.plan_id AND p.is_available = 1 '
                 f"WHERE l.status = 'active' AND {_ME} ORDER BY l.id, p.id",
                 (_DETAILS, Step("change_line_plan", {"customer_id": _CID, "phone_number": S("phone number"),
                                                      "plan_name": S("plan")})),
                 (Part("move my line to the {plan} plan", (0, 1, 2), ids=("phone number",), values=("plan",),
                       report=(("monthly fee", 2, "monthly_fee"),)),), write=2),
        Scenario("enable_roaming", "write",
                 f"{_SEL} {_FROM} WHERE l.status = 'active' AND l.roaming_enabled = 0 AND c.account_status = 'active' "
                 f"AND {_ME} ORDER BY l.id",
                 (_DETAILS, Step("enable_roaming", {"customer_id": _CID, "phone_number": S("phone number")})),
                 (Part("turn on roaming for my line; I'm travelling next week", (0, 1, 2), ids=("phone number",),
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
                  Part("enable roaming on my line {phone number}, but I'd rather not give you my email address", (),
                       kind="refuse", values=("phone number",), refusal="identity", withhold=("email address",)))),
    ),
)

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    date_of_birth TEXT NOT NULL,
    account_status TEXT NOT NULL CHECK (account_status IN ('active', 'suspended', 'closed')),
    credit_class TEXT NOT NULL CHECK (credit_class IN ('A', 'B', 'C')),
    billing_address TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE plans (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    plan_type TEXT NOT NULL CHECK (plan_type IN ('prepaid', 'postpaid', 'family', 'business')),
    monthly_fee REAL NOT NULL CHECK (monthly_fee >= 0),
    data_allowance_gb REAL CHECK (data_allowance_gb > 0),
    minutes_allowance INTEGER CHECK (minutes_allowance > 0),
    international_roaming INTEGER NOT NULL CHECK (international_roaming IN (0, 1)),
    is_available INTEGER NOT NULL CHECK (is_available IN (0, 1))
);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    imei TEXT NOT NULL UNIQUE CHECK (length(imei) = 15),
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    make TEXT NOT NULL CHECK (make IN ('Apple', 'Samsung', 'Google', 'Motorola')),
    model TEXT NOT NULL,
    purchased_on TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('in_use', 'spare', 'lost', 'replaced'))
);
CREATE TABLE lines (
    id INTEGER PRIMARY KEY,
    phone_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    plan_id INTEGER NOT NULL REFERENCES plans(id),
    device_id INTEGER UNIQUE REFERENCES devices(id),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'terminated')),
    roaming_enabled INTEGER NOT NULL CHECK (roaming_enabled IN (0, 1)),
    activated_on TEXT NOT NULL
);
CREATE TABLE bills (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    billing_period TEXT NOT NULL,
    amount_due REAL NOT NULL CHECK (amount_due >= 0),
    amount_paid REAL NOT NULL CHECK (amount_paid >= 0),
    due_date TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('paid', 'unpaid', 'overdue', 'disputed')),
    UNIQUE (customer_id, billing_period)
);
CREATE TABLE usage_records (
    id INTEGER PRIMARY KEY,
    line_id INTEGER NOT NULL REFERENCES lines(id),
    billing_period TEXT NOT NULL,
    data_used_gb REAL NOT NULL CHECK (data_used_gb >= 0),
    voice_minutes INTEGER NOT NULL CHECK (voice_minutes >= 0),
    sms_count INTEGER NOT NULL CHECK (sms_count >= 0),
    roaming_data_gb REAL NOT NULL DEFAULT 0 CHECK (roaming_data_gb >= 0),
    UNIQUE (line_id, billing_period)
);
CREATE TABLE support_tickets (
    id INTEGER PRIMARY KEY,
    ticket_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    line_id INTEGER REFERENCES lines(id),
    category TEXT NOT NULL CHECK (category IN ('billing', 'network', 'device', 'roaming', 'account')),
    priority TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    status TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    subject TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    resolved_at TEXT,
    CHECK (resolved_at IS NULL OR resolved_at >= opened_at)
);
"""

# name, plan_type, monthly_fee, data GB (None = unlimited), minutes (None = unlimited), roaming, available
_PLANS = [
    ("Prepaid Lite", "prepaid", 15.0, 3.0, 300, 0, 1),
    ("Prepaid Plus", "prepaid", 30.0, 15.0, None, 0, 1),
    ("Essentials", "postpaid", 45.0, 25.0, None, 0, 1),
    ("Unlimited", "postpaid", 70.0, None, None, 1, 1),
    ("Unlimited Premium", "postpaid", 90.0, None, None, 1, 1),
    ("Classic 10", "postpaid", 40.0, 10.0, 1000, 0, 0),
    ("Family Share 50", "family", 120.0, 50.0, None, 0, 1),
    ("Family Unlimited", "family", 160.0, None, None, 1, 1),
    ("Business Connect", "business", 55.0, 40.0, None, 1, 1),
    ("Business Unlimited", "business", 85.0, None, None, 1, 1),
]
_DEVICE_MODELS = {
    "Apple": ["iPhone 14", "iPhone 15", "iPhone 15 Pro", "iPhone 16"],
    "Samsung": ["Galaxy S23", "Galaxy S24", "Galaxy A54", "Galaxy Z Flip5"],
    "Google": ["Pixel 7a", "Pixel 8", "Pixel 9"],
    "Motorola": ["Moto G Power", "Edge 2024", "Razr"],
}
_TICKET_SUBJECTS = {
    "billing": ["Charge I don't recognise", "Bill higher than expected", "Autopay failed", "Late fee question"],
    "network": ["No signal at home", "Dropped calls downtown", "Slow data speeds", "SMS not delivered"],
    "device": ["Phone will not activate", "eSIM transfer failed", "Screen replacement request"],
    "roaming": ["Roaming not working abroad", "Unexpected roaming charges", "Enable roaming for trip"],
    "account": ["Update billing address", "Add authorised user", "Close a line", "Port-in number request"],
}
_PERIODS = ["2025-10", "2025-11", "2025-12"]  # the three full months before the reference date

N_CUSTOMERS = 150
N_TICKETS = 110


def _customer_details(fake, rng):
    state = fake.state_abbr(include_territories=False)
    address = f"{fake.street_address()}, {fake.city()}, {state} {fake.postcode()}"
    return (iso_day(rng, -85 * 365, -18 * 365), weighted(rng, {"active": 88, "suspended": 8, "closed": 4}),
            weighted(rng, {"A": 55, "B": 30, "C": 15}), address, iso_datetime(rng, -3000, -120))


def _plans():
    return [(pid, *plan) for pid, plan in enumerate(_PLANS, start=1)]


def _devices_and_lines(rng, customers, plans):
    """Each customer gets 1-4 lines (a plan shared per customer), most with a device."""
    by_type: dict[str, list[tuple]] = {}
    for plan in plans:
        by_type.setdefault(plan[2], []).append(plan)
    imeis: set[str] = set()
    numbers: set[str] = set()
    devices, lines = [], []
    for customer in customers:
        cid, account_status, created_at = customer[0], customer[5], customer[8]
        plan_type = weighted(rng, {"prepaid": 20, "postpaid": 50, "family": 18, "business": 12})
        n_lines = {"prepaid": 1, "postpaid": weighted(rng, {1: 70, 2: 30}),
                   "family": rng.randint(2, 4), "business": rng.randint(1, 3)}[plan_type]
        plan = rng.choice(by_type[plan_type])
        for _ in range(n_lines):
            device_id = None
            if rng.random() < 0.9:
                make = weighted(rng, {"Apple": 45, "Samsung": 35, "Google": 12, "Motorola": 8})
                device_id = len(devices) + 1
                devices.append((
                    device_id, unique(lambda: "35" + digits(rng, 13), imeis), cid, make,
                    rng.choice(_DEVICE_MODELS[make]), iso_day(rng, -1200, -10), "in_use",
                ))
            if account_status == "active":
                status = weighted(rng, {"active": 92, "suspended": 5, "terminated": 3})
            else:
                status = "suspended" if account_status == "suspended" else "terminated"
            lines.append((
                len(lines) + 1, unique(lambda: us_phone(rng), numbers), cid, plan[0], device_id, status,
                int(status == "active" and plan[6] == 1 and rng.random() < 0.3),
                iso_day(rng, days_since_reference(created_at), -5),
            ))
        if rng.random() < 0.15:  # an old handset kept as a spare, lost or replaced
            make = rng.choice(list(_DEVICE_MODELS))
            devices.append((
                len(devices) + 1, unique(lambda: "35" + digits(rng, 13), imeis), cid, make,
                rng.choice(_DEVICE_MODELS[make]), iso_day(rng, -2000, -400),
                weighted(rng, {"spare": 40, "lost": 20, "replaced": 40}),
            ))
    return devices, lines


def _usage_records(rng, lines, plans):
    allowance = {plan[0]: plan[4] for plan in plans}
    rows = []
    for line in lines:
        if line[5] == "terminated":
            continue
        cap = allowance[line[3]] or 60.0
        for period in _PERIODS:
            roaming = money(rng.uniform(0.1, 4)) if line[6] and rng.random() < 0.4 else 0.0
            rows.append((
                len(rows) + 1, line[0], period, money(rng.uniform(0.05, 1.1) * cap),
                rng.randint(0, 1500), rng.randint(0, 900), roaming,
            ))
    return rows


def _bills(rng, customers, lines, plans):
    """One bill per customer and period for customers with a live line.

    Family plans charge their fee once per account; other plans per line.  Bills
    fall due 45 days after the period starts, so only the latest one can still
    be 'unpaid' rather than 'overdue'.
    """
    plan_by_id = {plan[0]: plan for plan in plans}
    live_lines: dict[int, list[tuple]] = {}
    for line in lines:
        if line[5] != "terminated":
            live_lines.setdefault(line[2], []).append(line)
    rows = []
    for customer in customers:
        cid, account_status = customer[0], customer[5]
        if cid not in live_lines:
            continue
        plan = plan_by_id[live_lines[cid][0][3]]
        base = plan[3] if plan[2] == "family" else plan[3] * len(live_lines[cid])
        for period in _PERIODS:
            extras = rng.uniform(2, 40) if rng.random() < 0.25 else 0.0
            amount = money((base + extras) * 1.08)  # 8% taxes and fees
            if period == _PERIODS[-1]:
                status = weighted(rng, {"unpaid": 70, "paid": 25, "disputed": 5})
            elif account_status == "suspended":
                status = "overdue"
            else:
                status = weighted(rng, {"paid": 93, "disputed": 4, "overdue": 3})
            due = moment(days_since_reference(f"{period}-01") + 45).date().isoformat()
            rows.append((len(rows) + 1, cid, period, amount, amount if status == "paid" else 0.0, due, status))
    return rows


def _support_tickets(rng, customers, lines):
    lines_of: dict[int, list[int]] = {}
    for line in lines:
        lines_of.setdefault(line[2], []).append(line[0])
    numbers: set[str] = set()
    rows = []
    for customer in sorted(rng.choices(customers, k=N_TICKETS)):
        category = weighted(rng, {"billing": 30, "network": 25, "device": 15, "roaming": 10, "account": 20})
        line_id = None if category in ("billing", "account") else rng.choice(lines_of[customer[0]])
        opened = moment(rng.randint(-120, -1), rng.randrange(24 * 60))
        status = weighted(rng, {"open": 18, "in_progress": 17, "resolved": 35, "closed": 30})
        resolved = None
        if status in ("resolved", "closed"):
            resolved = iso_moment(min(opened + timedelta(hours=rng.randint(1, 240)), moment(0)))
        rows.append((
            len(rows) + 1, unique(lambda: f"TCK-{digits(rng, 6)}", numbers), customer[0], line_id, category,
            weighted(rng, {"low": 30, "medium": 40, "high": 22, "urgent": 8}), status,
            rng.choice(_TICKET_SUBJECTS[category]), iso_moment(opened), resolved,
        ))
    return rows


def build(path: Path, seed: int) -> None:
    """Create the telecom database at ``path`` (must not exist) from ``seed``."""
    fake, rng = make_generators("telecom", seed)
    customers = people(fake, rng, N_CUSTOMERS, _customer_details)
    plans = _plans()
    devices, lines = _devices_and_lines(rng, customers, plans)
    write_database(path, SCHEMA, {
        "customers": customers,
        "plans": plans,
        "devices": devices,
        "lines": lines,
        "bills": _bills(rng, customers, lines, plans),
        "usage_records": _usage_records(rng, lines, plans),
        "support_tickets": _support_tickets(rng, customers, lines),
    })
