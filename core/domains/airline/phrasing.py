"""How the airline words a change it proposes (see core/domains/retail/phrasing.py)."""

CHANGES = {
    "cancel_booking": "cancel booking {confirmation_code} on flight {flight_number}, and the fare of {fare_paid} is "
                      "refunded",
    "add_checked_bag": "add a {weight_kg} kg checked bag to booking {confirmation_code}, for a fee of 35",
}

# report label -> the ways the airline states that value ({v}), a clause each
FACTS = {
    "booking status": ("the booking is {v}", "your booking status is {v}", "the booking shows as {v}"),
    "seat": ("your seat is {v}", "you're in seat {v}", "the seat assigned is {v}"),
    "status": ("the flight is {v}", "its status is {v}", "the flight shows as {v}"),
    "departure time": ("it departs at {v}", "the departure time is {v}", "it's scheduled to leave at {v}"),
    "fee": ("the fee is {v}", "that costs {v}", "you'll be charged {v}"),
    "bag tag": ("the bag tag is {v}", "your bag tag number is {v}", "the tag on the bag is {v}"),
    "refund amount": ("the refund is {v}", "{v} will be refunded", "you'll get {v} back"),
}
