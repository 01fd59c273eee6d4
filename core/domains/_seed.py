"""Shared helpers for building the built-in domain databases.

Every domain module describes its schema as SQL text and its seed data as
lists of row tuples (in column order); :func:`write_database` turns that into a
new SQLite file inside a single transaction.  The date helpers keep all
generated timestamps relative to a fixed reference date so that a given seed
always produces byte-identical table contents.
"""

from __future__ import annotations

import random
import re
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

from faker import Faker

REFERENCE_DATE = date(2026, 1, 1)
_REFERENCE_DATETIME = datetime(REFERENCE_DATE.year, REFERENCE_DATE.month, REFERENCE_DATE.day)

T = TypeVar("T")


def make_generators(domain: str, seed: int) -> tuple[Faker, random.Random]:
    """Return a seeded Faker instance and an independent seeded RNG.

    The seed is salted with the domain name so that domains built from the same
    run seed do not share customer names.  String seeds are hashed with SHA-512
    by :mod:`random`, so this stays reproducible across processes.
    """
    salted = f"{domain}:{seed}"
    fake = Faker("en_US")
    fake.seed_instance(salted)
    return fake, random.Random(salted)


def write_database(path: Path, schema: str, rows: Mapping[str, Sequence[tuple]]) -> None:
    """Create a new SQLite file at ``path`` with ``schema`` and ``rows``.

    ``rows`` maps table name to row tuples in the table's column order and must
    list parent tables before their children: foreign keys are enforced while
    inserting.  Fails if ``path`` already exists; on error the partial file is
    removed.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"refusing to overwrite existing database: {path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        # executescript leaves the transaction opened by BEGIN running, so the
        # DDL and all inserts commit together.
        conn.executescript("BEGIN;\n" + schema)
        for table, table_rows in rows.items():
            if not table_rows:
                continue
            placeholders = ", ".join("?" * len(table_rows[0]))
            conn.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', table_rows)
        violations = conn.execute("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise sqlite3.IntegrityError(f"foreign key violations: {violations[:5]}")
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        path.unlink(missing_ok=True)
        raise
    conn.close()


def day(rng: random.Random, start: int, end: int) -> date:
    """A date ``start``..``end`` days (inclusive) after the reference date."""
    return REFERENCE_DATE + timedelta(days=rng.randint(start, end))


def iso_day(rng: random.Random, start: int, end: int) -> str:
    return day(rng, start, end).isoformat()


def moment(offset_days: int, minutes: int = 0) -> datetime:
    """The reference date's midnight shifted by whole days and minutes."""
    return _REFERENCE_DATETIME + timedelta(days=offset_days, minutes=minutes)


def iso_datetime(rng: random.Random, start_day: int, end_day: int) -> str:
    """An ISO-8601 timestamp (minute resolution) within the given day range."""
    return iso_moment(moment(rng.randint(start_day, end_day), rng.randrange(24 * 60)))


def iso_moment(moment: datetime) -> str:
    return moment.isoformat(timespec="minutes")


def days_since_reference(iso: str) -> int:
    """Signed day offset of an ISO date/timestamp from the reference date."""
    return (date.fromisoformat(iso[:10]) - REFERENCE_DATE).days


def unique(make: Callable[[], str], seen: set[str]) -> str:
    """Call ``make`` until it yields a value not in ``seen``; record and return it."""
    for _ in range(10_000):
        value = make()
        if value not in seen:
            seen.add(value)
            return value
    raise RuntimeError("could not generate a unique value")


EMAIL_DOMAINS = ("example.com", "mail.example.org", "inbox.example.net")


def email_for(rng: random.Random, first: str, last: str, domains: Sequence[str], seen: set[str]) -> str:
    """A unique, lowercase ``first.lastNN@domain`` address."""
    local = re.sub(r"[^a-z]", "", first.lower()) + "." + re.sub(r"[^a-z]", "", last.lower())
    return unique(lambda: f"{local}{rng.randint(1, 99)}@{rng.choice(domains)}", seen)


def people(fake: Faker, rng: random.Random, n: int, details: Callable[[Faker, random.Random], tuple]) -> list[tuple]:
    """Rows ``(id, email, first_name, last_name, *details(fake, rng))`` for ids 1..n, e-mails unique."""
    seen: set[str] = set()
    rows = []
    for pid in range(1, n + 1):
        first, last = fake.first_name(), fake.last_name()
        rows.append((pid, email_for(rng, first, last, EMAIL_DOMAINS, seen), first, last, *details(fake, rng)))
    return rows


def digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def us_phone(rng: random.Random) -> str:
    """A North-American number in the fictional 555 exchange."""
    return f"+1-{rng.randint(201, 989)}-555-{digits(rng, 4)}"


def weighted(rng: random.Random, choices: Mapping[T, float]) -> T:
    """Pick a key of ``choices`` with probability proportional to its value."""
    return rng.choices(list(choices), weights=list(choices.values()))[0]


def money(value: float) -> float:
    return round(value, 2)
