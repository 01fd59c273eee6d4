"""The airline database's seeded content (Faker and one RNG per domain and seed, core/domains/_seed.py)."""

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

# iata, name, city, country, timezone
_AIRPORTS = [
    ("ATL", "Hartsfield-Jackson Atlanta International", "Atlanta", "US", "America/New_York"),
    ("BOS", "Logan International", "Boston", "US", "America/New_York"),
    ("DEN", "Denver International", "Denver", "US", "America/Denver"),
    ("DFW", "Dallas/Fort Worth International", "Dallas", "US", "America/Chicago"),
    ("JFK", "John F. Kennedy International", "New York", "US", "America/New_York"),
    ("LAS", "Harry Reid International", "Las Vegas", "US", "America/Los_Angeles"),
    ("LAX", "Los Angeles International", "Los Angeles", "US", "America/Los_Angeles"),
    ("MIA", "Miami International", "Miami", "US", "America/New_York"),
    ("MSP", "Minneapolis-Saint Paul International", "Minneapolis", "US", "America/Chicago"),
    ("ORD", "O'Hare International", "Chicago", "US", "America/Chicago"),
    ("PHX", "Phoenix Sky Harbor International", "Phoenix", "US", "America/Phoenix"),
    ("SEA", "Seattle-Tacoma International", "Seattle", "US", "America/Los_Angeles"),
    ("SFO", "San Francisco International", "San Francisco", "US", "America/Los_Angeles"),
    ("YYZ", "Toronto Pearson International", "Toronto", "CA", "America/Toronto"),
    ("MEX", "Mexico City International", "Mexico City", "MX", "America/Mexico_City"),
    ("LHR", "Heathrow", "London", "GB", "Europe/London"),
    ("CDG", "Charles de Gaulle", "Paris", "FR", "Europe/Paris"),
    ("FRA", "Frankfurt am Main", "Frankfurt", "DE", "Europe/Berlin"),
    ("NRT", "Narita International", "Tokyo", "JP", "Asia/Tokyo"),
    ("ICN", "Incheon International", "Seoul", "KR", "Asia/Seoul"),
]
_HUBS = ["ATL", "DEN", "JFK", "ORD", "SFO"]
_MODELS = {"E175": 76, "A320": 150, "B737-800": 162, "A321neo": 196, "B787-9": 290}
_SHORT_HAUL_MODELS = ["E175", "A320", "B737-800", "A321neo"]
_CABINS = {  # cabin -> (booking weight, seat rows, fare multiplier)
    "economy": (70, range(12, 40), 1.0),
    "premium_economy": (15, range(8, 12), 1.6),
    "business": (11, range(3, 8), 3.4),
    "first": (4, range(1, 3), 5.5),
}
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_NATIONALITIES = {"US": 70, "CA": 8, "GB": 7, "MX": 6, "FR": 4, "JP": 5}

N_ROUTES = 40
N_PASSENGERS = 200
N_LOYALTY = 120
N_BOOKINGS = 600


def _airports():
    return [(index, *airport) for index, airport in enumerate(_AIRPORTS, start=1)]


def _aircraft(rng):
    tails: set[str] = set()
    rows = []
    for aid in range(1, 31):
        model = "B787-9" if aid <= 8 else rng.choice(_SHORT_HAUL_MODELS)
        status = weighted(rng, {"active": 85, "maintenance": 10, "retired": 5}) if aid > 10 else "active"
        rows.append((
            aid, unique(lambda: f"N{rng.randint(100, 999)}NA", tails), model, _MODELS[model], status,
            iso_day(rng, -5000, -200),
        ))
    return rows


def _routes(rng, airports):
    """(flight number, origin id, destination id, is_long_haul) tuples."""
    by_code = {airport[1]: airport for airport in airports}
    pairs: set[tuple[int, int]] = set()
    routes = []
    numbers: set[str] = set()
    while len(routes) < N_ROUTES:
        origin = by_code[rng.choice(_HUBS)]
        destination = rng.choice(airports)
        if destination is origin or (origin[0], destination[0]) in pairs:
            continue
        pairs.add((origin[0], destination[0]))
        long_haul = destination[4] not in ("US", "CA", "MX")
        number = unique(lambda: f"NA{rng.randint(10, 99) if long_haul else rng.randint(100, 2999)}", numbers)
        routes.append((number, origin[0], destination[0], long_haul))
    return routes


def _flight_status(rng, offset):
    if offset < 0:
        return weighted(rng, {"landed": 93, "cancelled": 7})
    if offset <= 1:
        return weighted(rng, {"scheduled": 75, "delayed": 17, "cancelled": 8})
    return weighted(rng, {"scheduled": 94, "delayed": 2, "cancelled": 4})


def _flights(rng, routes, aircraft):
    usable = [plane for plane in aircraft if plane[4] != "retired"]
    long_haul_planes = [plane for plane in usable if plane[2] == "B787-9"]
    short_haul_planes = [plane for plane in usable if plane[2] != "B787-9"]
    rows = []
    for number, origin, destination, long_haul in routes:
        hours = rng.uniform(8, 13.5) if long_haul else rng.uniform(1.2, 6)
        fare = rng.uniform(550, 1100) if long_haul else rng.uniform(90, 420)
        departure_minute = rng.randint(6, 22) * 60 + rng.choice([0, 15, 30, 45])
        for offset in sorted(rng.sample(range(-30, 46), rng.randint(4, 7))):
            departs = moment(offset, departure_minute)
            arrives = departs + timedelta(minutes=round(hours * 60))
            plane = rng.choice(long_haul_planes if long_haul else short_haul_planes)
            rows.append([
                None, number, departs.date().isoformat(), origin, destination, plane[0],
                iso_moment(departs), iso_moment(arrives), _flight_status(rng, offset),
                money(fare * rng.uniform(0.9, 1.15)),
            ])
    rows.sort(key=lambda row: (row[6], row[1]))
    return [(fid, *row[1:]) for fid, row in enumerate(rows, start=1)]


def _passenger_details(fake, rng):
    return iso_day(rng, -80 * 365, -18 * 365), us_phone(rng), weighted(rng, _NATIONALITIES)


def _loyalty_accounts(rng, passengers):
    numbers: set[str] = set()
    members = sorted(rng.sample([passenger[0] for passenger in passengers], N_LOYALTY))
    rows = []
    for lid, passenger_id in enumerate(members, start=1):
        tier = weighted(rng, {"basic": 55, "silver": 25, "gold": 14, "platinum": 6})
        points = {"basic": 20_000, "silver": 60_000, "gold": 150_000, "platinum": 400_000}[tier]
        rows.append((
            lid, unique(lambda: f"NM{digits(rng, 8)}", numbers), passenger_id, tier,
            rng.randint(0, points), iso_day(rng, -3650, -30),
        ))
    return rows


def _booking_status(rng, flight):
    offset = days_since_reference(flight[2])
    if flight[8] == "cancelled":
        return "cancelled"
    if rng.random() < 0.07:
        return "cancelled"
    if offset < 0:
        return "flown"
    return "checked_in" if offset <= 1 and rng.random() < 0.5 else "confirmed"


def _bookings(rng, passengers, flights):
    codes: set[str] = set()
    seats_taken: dict[int, set[str]] = {}
    pairs: set[tuple[int, int]] = set()
    rows = []
    while len(rows) < N_BOOKINGS:
        passenger_id, flight = rng.choice(passengers)[0], rng.choice(flights)
        if (passenger_id, flight[0]) in pairs:
            continue
        pairs.add((passenger_id, flight[0]))
        cabin = weighted(rng, {name: spec[0] for name, spec in _CABINS.items()})
        _, seat_rows, multiplier = _CABINS[cabin]
        seat = unique(lambda: f"{rng.choice(seat_rows)}{rng.choice('ABCDEF')}",
                      seats_taken.setdefault(flight[0], set()))
        offset = days_since_reference(flight[2])
        rows.append((
            len(rows) + 1, unique(lambda: "".join(rng.choices(_CODE_ALPHABET, k=6)), codes),
            passenger_id, flight[0], cabin, seat, money(flight[9] * multiplier * rng.uniform(0.85, 1.25)),
            _booking_status(rng, flight), iso_datetime(rng, offset - 120, min(offset - 1, -1)),
        ))
    return rows


def _baggage(rng, bookings, loyalty):
    elite = {account[2] for account in loyalty if account[3] in ("gold", "platinum")}
    tags: set[str] = set()
    rows = []
    for booking in bookings:
        status = booking[7]
        if status not in ("flown", "checked_in"):
            continue
        free_bags = 2 if booking[4] in ("business", "first") else 1 if booking[2] in elite else 0
        for bag in range(weighted(rng, {0: 25, 1: 45, 2: 30})):
            if status == "flown":
                bag_status = weighted(rng, {"delivered": 97, "lost": 3})
            else:
                bag_status = weighted(rng, {"checked": 60, "loaded": 40})
            rows.append((
                len(rows) + 1, unique(lambda: f"00{digits(rng, 8)}", tags), booking[0],
                round(rng.uniform(6, 31.5), 1), 0.0 if bag < free_bags else (35.0, 45.0)[bag], bag_status,
            ))
    return rows


def build(path: Path, seed: int) -> None:
    """Create the airline database at ``path`` (must not exist) from ``seed``."""
    fake, rng = make_generators("airline", seed)
    airports = _airports()
    aircraft = _aircraft(rng)
    flights = _flights(rng, _routes(rng, airports), aircraft)
    passengers = people(fake, rng, N_PASSENGERS, _passenger_details)
    loyalty = _loyalty_accounts(rng, passengers)
    bookings = _bookings(rng, passengers, flights)
    write_database(path, SCHEMA, {
        "airports": airports,
        "aircraft": aircraft,
        "flights": flights,
        "passengers": passengers,
        "loyalty_accounts": loyalty,
        "bookings": bookings,
        "baggage": _baggage(rng, bookings, loyalty),
    })
