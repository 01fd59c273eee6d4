"""How the airline words a change it proposes (see core/domains/retail/phrasing.py)."""

CHANGES = {
    # the trip by where and when, as the customer knows it (not by a flight number they did not give)
    "cancel_booking": (
        "cancel booking {confirmation_code}, your {origin} to {destination} flight on {departure_date}, and the "
        "fare of {fare_paid} is refunded",
        "cancel your booking {confirmation_code} for the {departure_date} flight from {origin} to {destination} and "
        "refund the {fare_paid} fare",
        "cancel booking {confirmation_code} ({origin} to {destination}, {departure_date}); you'd get the full "
        "{fare_paid} back",
        "cancel the reservation {confirmation_code} for {origin} to {destination} on {departure_date}, refunding "
        "the {fare_paid} you paid",
        "cancel {confirmation_code}, the trip from {origin} to {destination} on {departure_date}, with a refund of "
        "{fare_paid} to your original payment",
        "cancel your seat on the {departure_date} flight from {origin} to {destination} (booking "
        "{confirmation_code}) and return the {fare_paid} you paid",
        "cancel booking {confirmation_code}; your {departure_date} trip from {origin} to {destination} is then off "
        "your plans and {fare_paid} comes back to you"),
    "add_checked_bag": (
        "add one {weight_kg} kg checked bag to booking {confirmation_code}, for a fee of 35",
        "add one checked bag of {weight_kg} kg to booking {confirmation_code}; the fee is 35",
        "add one {weight_kg} kg bag to booking {confirmation_code} at the standard bag fee of 35",
        "add a checked bag weighing {weight_kg} kg to your booking {confirmation_code}, which costs 35",
        "add one bag of {weight_kg} kg to {confirmation_code} and charge the 35 bag fee",
        "add your {weight_kg} kg suitcase to booking {confirmation_code} as a checked bag, 35 for the bag",
        "add a checked bag ({weight_kg} kg) on {confirmation_code}; we charge 35 per bag"),
}

def _cancel_terms(args: dict, rows: list[dict]) -> dict:
    return {"fare_paid": next(r["fare_paid"] for r in rows if r.get("confirmation_code") == args["confirmation_code"]
                              and "fare_paid" in r)}


# the refund at stake (see core/domains/retail/phrasing.py)
TERMS = {"cancel_booking": _cancel_terms}

# report label -> the ways the airline states that value ({v}), a clause each
FACTS = {
    "booking status": ("the booking is now {v}", "we show the booking as {v}", "the booking stands as {v}",
                       "the status of your booking is {v}", "on our side it's {v}", "the booking is {v}",
                       "your booking status is {v}", "the booking shows as {v}", "your reservation is {v}",
                       "the booking is marked {v}", "it's {v} on our side", "the reservation shows {v}"),
    "seat": ("we've seated you in {v}", "{v} is your seat", "your seat assignment is {v}", "you've got seat {v}",
             "the seat on it is {v}", "your seat is {v}", "you're in seat {v}", "the seat assigned is {v}",
             "you're sitting in {v}", "we have you in {v}", "your seat number is {v}", "seat {v} is yours"),
    "status": ("the latest status is {v}", "we have the flight as {v}", "the flight is showing {v}",
               "as of now it's {v}", "the board has it as {v}", "the flight is {v}", "its status is {v}",
               "the flight shows as {v}", "it's listed as {v}", "the flight status is {v}",
               "right now the flight is {v}", "it's currently {v}"),
    "departure time": ("we expect it to depart at {v}", "it's timetabled for {v}", "take-off is planned for {v}",
                       "it departs at {v}", "the departure time is {v}", "it's scheduled to leave at {v}",
                       "departure is set for {v}", "it leaves at {v}", "it's due out at {v}",
                       "the scheduled departure is {v}"),
    "fee": ("we charge {v} for it", "the price for the bag is {v}", "{v} goes on your card for it", "the charge is {v}",
            "it comes to {v}", "the fee is {v}", "that costs {v}", "you'll be charged {v}", "the bag fee comes to {v}",
            "{v} is charged for it", "it's {v} for the bag"),
    "bag tag": ("the tag number to keep is {v}", "we've tagged it {v}", "look for tag {v} at the carousel",
                "the bag's tag reads {v}", "your tag is {v}", "the bag tag is {v}", "your bag tag number is {v}",
                "the tag on the bag is {v}", "the bag is tagged {v}", "its tag number is {v}",
                "keep {v} as the bag's tag"),
    "refund amount": ("{v} is being returned to your card", "the amount refunded is {v}", "we'll send {v} back to you",
                      "your money back comes to {v}", "the refund comes to {v}", "you're getting {v} back",
                      "the refund is {v}", "{v} will be refunded", "you'll get {v} back",
                      "a refund of {v} is on its way", "{v} goes back to you", "we're refunding {v}"),
}

# slot -> the airline's own ways to ask for it ({s}: the slot, named so that any reader finds it)
ASKS = {
    "email address": ("To find your profile, what's the {s} you booked with?",
                      "Which {s} is on your Nimbus Air profile?", "What {s} did you use when booking?",
                      "Let me find you first: what's the {s} on your profile?",
                      "Could you give me the {s} your tickets were sent to?",
                      "What's the {s} on your frequent-flyer profile?", "I'll look you up by your {s}; what is it?",
                      "Which {s} do your boarding passes go to?"),
    "confirmation code": ("What's the six-character {s} on your e-ticket?", "Which booking is it? I need the {s}.",
                          "Could you read me the {s} from your itinerary?",
                          "What's the booking's {s}? It's on your boarding pass too.",
                          "Do you have the {s} from your booking email?",
                          "Which trip is it? Please read me its {s}.",
                          "I'll need the booking's {s}, six letters and digits.",
                          "What {s} did we send you for this trip?", "Could you check your itinerary for the {s}?"),
}

# refusal reason -> other ways to give the policy's reason (see core/domains/retail/phrasing.py)
REASONS = {
    "identity": ("I can't open a booking until I've verified you with the email address on your profile",
                 "bookings are only accessible once you're verified by the email address on your profile",
                 "without verifying you by your profile's email address I can't look at or change a booking"),
    "state": ("booking {confirmation code} is {status}, and only confirmed bookings can still be changed or "
              "cancelled",
              "booking {confirmation code} shows as {status}; changes and cancellations are only possible while a "
              "booking is confirmed",
              "a booking that is {status}, as {confirmation code} is, can no longer be changed or cancelled"),
    "limit": ("this bag weighs {weight kg} kg, and we can't check bags over 32 kg",
              "the limit for a checked bag is 32 kg, and this one is {weight kg} kg",
              "at {weight kg} kg the bag is over our 32 kg limit for checked bags"),
    "ownership": ("booking {confirmation code} is in someone else's name, so I can't open or change it",
                  "I can only work with bookings in your own name, and {confirmation code} isn't one of them",
                  "booking {confirmation code} isn't linked to your profile, so it's off limits to me"),
}

# slot -> how an answer names the record the customer asked about ("For booking X, ...")
RECORDS = {"confirmation code": "booking {v}", "flight number": "flight {v}"}
