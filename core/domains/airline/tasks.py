"""What airline customers ask for: the service scenarios, each a pick query over the current state, a gold
plan over the domain's actions and the requests in the customer's words (core/tasks/service.py)."""

from __future__ import annotations

from toolturn.core.tasks.service import Part, R, S, Scenario, Service, Step

from .phrasing import ASKS, CHANGES, FACTS, REASONS, RECORDS, TERMS
from .policy import POLICY

_ME = "(:email IS NULL OR p.email = :email)"
_SEL = 'SELECT p.email AS "email address", b.confirmation_code AS "confirmation code"'
_FROM = "FROM bookings b JOIN passengers p ON p.id = b.passenger_id JOIN flights f ON f.id = b.flight_id"
_PAX_BOOKING = f"{_SEL} {_FROM}"
_PID = R(0, "passenger_id")
_DETAILS = Step("get_booking_details", {"passenger_id": _PID, "confirmation_code": S("confirmation code")})

_ADD_BAG = ("add a checked bag of {weight kg} kg to my booking", "add one {weight kg} kg suitcase to my booking",
            "check in one bag of {weight kg} kg on my booking")

# The default task mix (`domain.task_mix` overrides it; see core/domains/retail/tasks.py).
TASK_MIX = {"flight_status": 1.0, "booking_status": 1.0, "cancel_booking": 0.7, "add_bag": 0.7}

SERVICE = Service(
    changes=CHANGES, facts=FACTS, terms=TERMS, asks=ASKS, records=RECORDS, reasons=REASONS,
    builtin_reasons=dict(POLICY.reasons), task_mix=TASK_MIX,
    identify=("find_passenger_by_email", "email"), slot="email address", owner_key="passenger_id",
    scenarios=(
        Scenario("flight_status", "public",
                 'SELECT f.flight_number AS "flight number", f.departure_date AS "date" FROM flights f ORDER BY f.id',
                 (Step("search_flights", {"flight_number": S("flight number"), "departure_date": S("date")}),),
                 (Part(("tell me the status and departure time of flight {flight number} on {date}",
                        "check whether flight {flight number} on {date} is on time and when it leaves",
                        "tell me when flight {flight number} on {date} departs and how it's looking"), (0,),
                       values=("flight number", "date"),
                       report=(("status", 0, 0, "status"), ("departure time", 0, 0, "departure_time"))),)),
        Scenario("booking_status", "read", f"{_PAX_BOOKING} WHERE {_ME} ORDER BY b.id", (_DETAILS,),
                 (Part(("tell me my seat and the status of my booking", "check my booking and tell me my seat",
                        "look up my booking: which seat do I have, and is it still on"), (0, 1),
                       ids=("confirmation code",),
                       report=(("seat", 1, "seat_number"), ("booking status", 1, "status"))),)),
        Scenario("cancel_booking", "write", f"{_PAX_BOOKING} WHERE b.status = 'confirmed' AND f.status IN "
                 f"('scheduled', 'delayed') AND {_ME} ORDER BY b.id",
                 (_DETAILS,
                  Step("cancel_booking", {"passenger_id": _PID, "confirmation_code": S("confirmation code")})),
                 (Part(("cancel my booking; I can't make the trip", "cancel my booking, my plans have changed",
                        "cancel a booking I no longer need"), (0, 1, 2), ids=("confirmation code",),
                       report=(("booking status", 2, "status"), ("refund amount", 2, "refund_amount"))),), write=2),
        Scenario("add_bag", "write", f'{_SEL}, 10 + b.id % 20 AS "weight kg" {_FROM} '
                 f"WHERE b.status IN ('confirmed', 'checked_in') AND f.status IN ('scheduled', 'delayed') AND {_ME} "
                 "ORDER BY b.id",
                 (_DETAILS, Step("add_checked_bag", {"passenger_id": _PID, "confirmation_code": S("confirmation code"),
                                                     "weight_kg": S("weight kg")})),
                 (Part(_ADD_BAG, (0, 1, 2), ids=("confirmation code",),
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
                 (Part(_ADD_BAG, (0, 1), kind="refuse",
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
                  Part("cancel my booking {confirmation code}", (),
                       kind="refuse", values=("confirmation code",), refusal="identity", withhold=("email address",)))),
    ),
)
