"""The airline domain's service actions: checked multi-statement SQL tools (core/domains/actions.py)."""

from __future__ import annotations

from ..actions import action, exists, in_state, next_id, owned, param

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
