"""The telecom database's seeded content (Faker and one RNG per domain and seed, core/domains/_seed.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from .._seed import (
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
from .schema import SCHEMA

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
