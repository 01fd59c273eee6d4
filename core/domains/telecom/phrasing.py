"""How the carrier words a change it proposes (see core/domains/retail/phrasing.py)."""

CHANGES = {
    "change_line_plan": "move line {phone_number} to the {plan_name} plan",
    "enable_roaming": "turn on roaming for line {phone_number}",
    "reactivate_line": "reactivate line {phone_number}",
}

# report label -> the ways the carrier states that value ({v}), a clause each
FACTS = {
    "line status": ("the line is {v}", "the line status is {v}", "your line shows as {v}"),
    "monthly fee": ("the monthly fee is {v}", "it costs {v} a month", "you pay {v} per month"),
    "plan": ("the line is on the {v} plan", "your plan is {v}", "you're on {v}"),
}
