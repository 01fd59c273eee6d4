"""How the carrier words a change it proposes (see core/domains/retail/phrasing.py)."""

from __future__ import annotations

from toolturn.core.tasks.types import format_value

CHANGES = {
    "change_line_plan": (
        "move line {phone_number} from the {plan} plan to the {plan_name} plan, at {new_fee} a month ({difference})",
        "change line {phone_number} to the {plan_name} plan; it costs {new_fee} a month against {monthly_fee} now, "
        "{difference}",
        "change line {phone_number} over to {plan_name} at {new_fee} per month, {difference} compared with "
        "your {plan} plan",
        "change the plan on line {phone_number} to {plan_name}: {new_fee} a month, {difference}",
        "update line {phone_number} to the {plan_name} plan, so you'd pay {new_fee} a month instead of "
        "{monthly_fee}"),
    "enable_roaming": (
        "turn on roaming for line {phone_number}",
        "enable roaming on line {phone_number}; your plan stays the same",
        "set line {phone_number} to allow roaming",
        "add roaming to line {phone_number}",
        "switch on roaming for your line {phone_number}"),
    "reactivate_line": (
        "reactivate line {phone_number}, and its {plan} plan at {monthly_fee} a month is billed again",
        "reactivate line {phone_number}; billing of {monthly_fee} a month on the {plan} plan resumes",
        "set line {phone_number} back to active on the {plan} plan, at {monthly_fee} a month",
        "reactivate your line {phone_number}, which brings back the {monthly_fee} monthly fee",
        "reactivate line {phone_number} on its {plan} plan ({monthly_fee} a month)"),
}


def _plan_terms(args: dict, rows: list[dict]) -> dict:
    """The new plan's fee against the line's current one (the line and the plan were read before the change)."""
    new = next(r["monthly_fee"] for r in rows if r.get("name") == args["plan_name"])
    old = next(r["monthly_fee"] for r in rows if r.get("phone_number") == args["phone_number"])
    diff = round(new - old, 2)
    return {"new_fee": new, "difference": "no change in fee" if not diff else
            f"{format_value(abs(diff))} {'more' if diff > 0 else 'less'} a month"}


def _reactivate_terms(args: dict, rows: list[dict]) -> dict:
    return {"monthly_fee": next(r["monthly_fee"] for r in rows if r.get("phone_number") == args["phone_number"])}


TERMS = {"change_line_plan": _plan_terms, "reactivate_line": _reactivate_terms}

# report label -> the ways the carrier states that value ({v}), a clause each
FACTS = {
    "line status": ("the line is {v}", "the line status is {v}", "your line shows as {v}", "the line is now {v}",
                    "it's {v}", "we have the line as {v}", "its status is {v}"),
    "monthly fee": ("the monthly fee is {v}", "it costs {v} a month", "you pay {v} per month", "it's {v} monthly",
                    "the plan runs {v} a month", "that's {v} every month", "the fee comes to {v} a month"),
    "plan": ("the line is on the {v} plan", "your plan is {v}", "you're on {v}", "it's on the {v} plan",
             "the plan on it is {v}", "you have the {v} plan"),
}

# slot -> the carrier's own ways to ask for it ({s}: the slot, named so that any reader finds it)
ASKS = {
    "email address": ("To open your account, what's the {s} on it?", "Which {s} is the account registered to?",
                      "What {s} do your bills go to?", "Let me find your account first: what's its {s}?",
                      "Could you give me the {s} you use with us?"),
    "phone number": ("Which line is it? I need its {s}.", "What's the {s} of the line?",
                     "Could you give me the {s} in question?", "Which {s} are we looking at?",
                     "What {s} is on the line you mean?"),
}

# refusal reason -> other ways to give the policy's reason (see core/domains/retail/phrasing.py)
REASONS = {
    "identity": ("I can't open an account until I've verified the holder with the email address on it",
                 "accounts are only accessible once the holder is verified by the account's email address",
                 "without verifying you by the account's email address I can't discuss or change anything on it"),
    "state": ("line {phone number} is {status}, and a plan can only be changed on an active line",
              "plan changes need an active line, and line {phone number} is {status}",
              "line {phone number} shows as {status}; only active lines can move to another plan"),
    "overdue": ("the account has an overdue bill, so line {phone number} can't be reactivated until it's paid",
                "reactivating line {phone number} isn't possible while a bill on the account is overdue",
                "an overdue bill on the account blocks reactivating line {phone number}"),
    "ownership": ("line {phone number} belongs to a different account, so I can't open or change it",
                  "I can only work with lines on your own account, and {phone number} isn't one of them",
                  "line {phone number} isn't linked to your account, so it's off limits to me"),
}

# slot -> how an answer names the record the customer asked about ("For line X, ...")
RECORDS = {"phone number": "line {v}", "plan": "the {v} plan"}
