"""Built-in domain: an airline (network, schedule, passengers, bookings, bags)."""

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
from .actions import action, exists, in_state, next_id, owned, param

DESCRIPTION = (
    "Nimbus Air is a mid-sized airline that flies scheduled domestic and international "
    "routes from its US hubs and runs a frequent-flyer loyalty programme."
)

POLICY = Policy(
    name="airline",
    preamble="You are a customer-service assistant for Nimbus Air.",
    identity=Identity(table="passengers", key="passenger_id", tools={"find_passenger_by_email": "email"},
                      who="passenger", by="the email address on their profile", records="bookings or profile details"),
    states=(StateRule("bookings", "status", ("confirmed",), ("cancel_booking", "update_booking", "delete_booking"),
                      "Bookings can be changed or cancelled only while their status is 'confirmed' and the flight "
                      "is not cancelled, departed or landed."),
            StateRule("bookings", "status", ("confirmed", "checked_in"), ("add_checked_bag",),
                      "Bags can be added only to 'confirmed' or 'checked_in' bookings; bags over 32 kg cannot be "
                      "checked.", tables=("baggage",))),
    private={"passengers": ("email", "first_name", "last_name", "phone"),
             "loyalty_accounts": ("membership_number",), "bookings": ("confirmation_code",),
             "baggage": ("tag_number",)},
    reasons={"identity": "I can only look at or change bookings after verifying your identity with the email "
                         "address on your profile",
             "state": "booking {confirmation code} is {status}, and only confirmed bookings can be changed or "
                      "cancelled",
             "limit": "bags over 32 kg cannot be checked, and this one weighs {weight kg} kg",
             "ownership": "booking {confirmation code} is not in your name, so I can't access or change it"},
    notes=("A booking may move only to another flight with the same origin and destination, in the same or a "
           "higher cabin class; charge any fare difference.",
           "Cancellations of flights that have been cancelled by the airline are refunded in full; other "
           "cancellations follow the fare paid, not a made-up amount.",
           "Check-in opens 24 hours before departure; do not check in passengers earlier.",
           "Loyalty points may be quoted but never adjusted without a recorded reason.",
           "If a tool call fails or returns an error, say so honestly; never claim an action succeeded when it did not.",
           "Be concise and factual; never invent flights, seats, fares or statuses."),
)

_BOOKING = {"passenger_id": param("integer", "id of the verified passenger"),
            "confirmation_code": param("string", "the booking's confirmation code")}
_OWN_BOOKING = (exists("bookings", "confirmation_code", "booking"),
                owned("bookings", "confirmation_code", "passenger_id", "booking", "this passenger"))
_FLIGHT_OPEN = ("SELECT 'the flight of booking ' || :confirmation_code || ' is ' || f.status || '; it cannot be "
                "changed' FROM bookings b JOIN flights f ON f.id = b.flight_id WHERE b.confirmation_code = "
                ":confirmation_code AND f.status NOT IN ('scheduled', 'delayed')")

ACTIONS = [
    action("find_passenger_by_email", "Identify the passenger: find their profile by the email address they give.",
           "passengers", {"email": param("string", "the passenger's email address")},
           "SELECT id AS passenger_id, email, first_name, last_name FROM passengers WHERE email = :email COLLATE NOCASE"),
    action("get_booking_details", "A booking of the verified passenger with its flight.", "bookings", _BOOKING,
           "SELECT b.confirmation_code, b.passenger_id, b.status, b.cabin_class, b.seat_number, b.fare_paid, "
           "f.flight_number, f.departure_date, f.departure_time, f.status AS flight_status, o.iata_code AS origin, "
           "d.iata_code AS destination, (SELECT COUNT(*) FROM baggage g WHERE g.booking_id = b.id) AS bags "
           "FROM bookings b JOIN flights f ON f.id = b.flight_id JOIN airports o ON o.id = f.origin_airport_id "
           "JOIN airports d ON d.id = f.destination_airport_id WHERE b.confirmation_code = :confirmation_code",
           checks=_OWN_BOOKING),
    action("cancel_booking", "Cancel a confirmed booking of the verified passenger on a flight that has not "
           "departed; the fare paid is refunded.", "bookings", _BOOKING,
           "SELECT confirmation_code, passenger_id, status, fare_paid AS refund_amount FROM bookings "
           "WHERE confirmation_code = :confirmation_code",
           checks=_OWN_BOOKING + (in_state("bookings", "confirmation_code", "status", ("confirmed",), "booking",
                                           "cancelled"), _FLIGHT_OPEN),
           statements=("UPDATE bookings SET status = 'cancelled' WHERE confirmation_code = :confirmation_code",)),
    action("add_checked_bag", "Check a bag (at most 32 kg) on a confirmed or checked-in booking of the verified "
           "passenger; the fee is 35.", "bookings", {**_BOOKING, "weight_kg": param("number", "the bag's weight in kg",
                                                                                minimum=0.1, maximum=100)},
           "SELECT g.tag_number, b.confirmation_code, b.passenger_id, g.weight_kg, g.fee, g.status FROM baggage g "
           "JOIN bookings b ON b.id = g.booking_id WHERE g.id = (SELECT MAX(id) FROM baggage)",
           checks=_OWN_BOOKING + (in_state("bookings", "confirmation_code", "status", ("confirmed", "checked_in"),
                                           "booking", "given bags"), _FLIGHT_OPEN,
                                  "SELECT 'bags over 32 kg cannot be checked' WHERE :weight_kg > 32"),
           statements=(f"INSERT INTO baggage (id, tag_number, booking_id, weight_kg, fee, status) SELECT "
                       f"{next_id('baggage')}, 'NB-R' || printf('%05d', {next_id('baggage')}), id, :weight_kg, 35.0, "
                       f"'checked' FROM bookings WHERE confirmation_code = :confirmation_code",)),
]

_ME = "(:email IS NULL OR p.email = :email)"
_SEL = 'SELECT p.email AS "email address", b.confirmation_code AS "confirmation code"'
_FROM = "FROM bookings b JOIN passengers p ON p.id = b.passenger_id JOIN flights f ON f.id = b.flight_id"
_PAX_BOOKING = f"{_SEL} {_FROM}"
_PID = R(0, "passenger_id")
_DETAILS = Step("get_booking_details", {"passenger_id": _PID, "confirmation_code": S("confirmation code")})

SERVICE = Service(
    identify=("find_passenger_by_email", "email"), slot="email address", owner_key="passenger_id",
    scenarios=(
        Scenario("flight_status", "public",
                 'SELECT f.flight_number AS "flight number", f.departure_date AS "date" FROM flights f ORDER BY f.id',
                 (Step("search_flights", {"flight_number": S("flight number"), "departure_date": S("date")}),),
                 (Part("tell me the status and departure time of flight {flight number} on {date}", (0,),
                       values=("flight number", "date"),
                       report=(("status", 0, 0, "status"), ("departure time", 0, 0, "departure_time"))),)),
        Scenario("booking_status", "read", f"{_PAX_BOOKING} WHERE {_ME} ORDER BY b.id", (_DETAILS,),
                 (Part("tell me my seat and the status of my booking", (0, 1), ids=("confirmation code",),
                       report=(("seat", 1, "seat_number"), ("booking status", 1, "status"))),)),
        Scenario("cancel_booking", "write", f"{_PAX_BOOKING} WHERE b.status = 'confirmed' AND f.status IN "
                 f"('scheduled', 'delayed') AND {_ME} ORDER BY b.id",
                 (_DETAILS, Step("cancel_booking", {"passenger_id": _PID, "confirmation_code": S("confirmation code")})),
                 (Part("cancel my booking; I can't make the trip", (0, 1, 2), ids=("confirmation code",),
                       report=(("booking status", 2, "status"), ("refund amount", 2, "refund_amount"))),), write=2),
        Scenario("add_bag", "write", f'{_SEL}, 10 + b.id % 20 AS "weight kg" {_FROM} '
                 f"WHERE b.status IN ('confirmed', 'checked_in') AND f.status IN ('scheduled', 'delayed') AND {_ME} "
                 "ORDER BY b.id",
                 (_DETAILS, Step("add_checked_bag", {"passenger_id": _PID, "confirmation_code": S("confirmation code"),
                                                     "weight_kg": S("weight kg")})),
                 (Part("add a checked bag of {weight kg} kg to my booking", (0, 1, 2), ids=("confirmation code",),
                       values=("weight kg",), report=(("bag tag", 2, "tag_number"), ("fee", 2, "fee"))),), write=2),
        Scenario("refuse_cancel_flown", "refuse",
                 f'{_SEL}, b.status AS "status" {_FROM} WHERE b.status IN '
                 f"('flown', 'checked_in') AND {_ME} ORDER BY b.id", (_DETAILS,),
                 (Part("cancel my booking", (0, 1), kind="refuse", ids=("confirmation code",), refusal="state",
                       report=(("booking status", 1, "status"),)),)),
        Scenario("refuse_heavy_bag", "refuse",
                 f'{_SEL}, 33 + b.id % 8 AS "weight kg" {_FROM} '
                 f"WHERE b.status = 'confirmed' AND f.status IN ('scheduled', 'delayed') AND {_ME} ORDER BY b.id",
                 (_DETAILS,),
                 (Part("add a checked bag of {weight kg} kg to my booking", (0, 1), kind="refuse",
                       ids=("confirmation code",), values=("weight kg",), refusal="limit"),)),
        Scenario("refuse_foreign_booking", "refuse",
                 'SELECT p.email AS "email address", b.confirmation_code AS "confirmation code" FROM passengers p '
                 f"JOIN bookings b ON b.passenger_id <> p.id WHERE b.status = 'confirmed' AND {_ME} ORDER BY p.id, b.id",
                 (Step("get_booking_details", {"passenger_id": _PID, "confirmation_code": S("confirmation code")},
                       expect_error=True),),
                 (Part("cancel my booking {confirmation code}", (0, 1), kind="refuse", values=("confirmation code",),
                       refusal="ownership"),)),
        Scenario("refuse_unidentified", "refuse",
                 'SELECT f.flight_number AS "flight number", f.departure_date AS "date", b.confirmation_code AS '
                 '"confirmation code" FROM flights f JOIN bookings b ON b.flight_id = f.id WHERE b.status = '
                 "'confirmed' ORDER BY b.id",
                 (Step("search_flights", {"flight_number": S("flight number"), "departure_date": S("date")}),),
                 (Part("tell me the status of flight {flight number} on {date}", (0,), values=("flight number", "date"),
                       report=(("status", 0, 0, "status"),)),
                  Part("cancel my booking {confirmation code}, but I'd rather not give you my email address", (),
                       kind="refuse", values=("confirmation code",), refusal="identity", withhold=("email address",)))),
    ),
)

SCHEMA = """
CREATE TABLE airports (
    id INTEGER PRIMARY KEY,
    iata_code TEXT NOT NULL UNIQUE CHECK (length(iata_code) = 3),
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    country TEXT NOT NULL,
    timezone TEXT NOT NULL
);
CREATE TABLE aircraft (
    id INTEGER PRIMARY KEY,
    tail_number TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL CHECK (model IN ('E175', 'A320', 'B737-800', 'A321neo', 'B787-9')),
    seat_capacity INTEGER NOT NULL CHECK (seat_capacity > 0),
    status TEXT NOT NULL CHECK (status IN ('active', 'maintenance', 'retired')),
    in_service_since TEXT NOT NULL
);
CREATE TABLE flights (
    id INTEGER PRIMARY KEY,
    flight_number TEXT NOT NULL,
    departure_date TEXT NOT NULL,
    origin_airport_id INTEGER NOT NULL REFERENCES airports(id),
    destination_airport_id INTEGER NOT NULL REFERENCES airports(id),
    aircraft_id INTEGER NOT NULL REFERENCES aircraft(id),
    departure_time TEXT NOT NULL,
    arrival_time TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'delayed', 'landed', 'cancelled')),
    base_fare REAL NOT NULL CHECK (base_fare > 0),
    UNIQUE (flight_number, departure_date),
    CHECK (origin_airport_id <> destination_airport_id),
    CHECK (arrival_time > departure_time)
);
CREATE TABLE passengers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    date_of_birth TEXT NOT NULL,
    phone TEXT,
    nationality TEXT NOT NULL CHECK (length(nationality) = 2)
);
CREATE TABLE loyalty_accounts (
    id INTEGER PRIMARY KEY,
    membership_number TEXT NOT NULL UNIQUE,
    passenger_id INTEGER NOT NULL UNIQUE REFERENCES passengers(id),
    tier TEXT NOT NULL CHECK (tier IN ('basic', 'silver', 'gold', 'platinum')),
    points_balance INTEGER NOT NULL CHECK (points_balance >= 0),
    joined_on TEXT NOT NULL
);
CREATE TABLE bookings (
    id INTEGER PRIMARY KEY,
    confirmation_code TEXT NOT NULL UNIQUE,
    passenger_id INTEGER NOT NULL REFERENCES passengers(id),
    flight_id INTEGER NOT NULL REFERENCES flights(id),
    cabin_class TEXT NOT NULL CHECK (cabin_class IN ('economy', 'premium_economy', 'business', 'first')),
    seat_number TEXT NOT NULL,
    fare_paid REAL NOT NULL CHECK (fare_paid >= 0),
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'checked_in', 'flown', 'cancelled')),
    booked_at TEXT NOT NULL,
    UNIQUE (flight_id, seat_number),
    UNIQUE (passenger_id, flight_id)
);
CREATE TABLE baggage (
    id INTEGER PRIMARY KEY,
    tag_number TEXT NOT NULL UNIQUE,
    booking_id INTEGER NOT NULL REFERENCES bookings(id),
    weight_kg REAL NOT NULL CHECK (weight_kg > 0 AND weight_kg <= 32),
    fee REAL NOT NULL CHECK (fee >= 0),
    status TEXT NOT NULL CHECK (status IN ('checked', 'loaded', 'delivered', 'lost'))
);
"""

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
