"""The telecom domain's service actions: checked multi-statement SQL tools (core/domains/actions.py)."""

from __future__ import annotations

from ..actions import action, exists, in_state, owned, param

_LINE = {"customer_id": param("integer", "id of the verified account holder"),
         "phone_number": param("string", "the line's phone number")}
_OWN_LINE = (exists("lines", "phone_number", "line"), owned("lines", "phone_number", "customer_id", "line"))
_LINE_RESULT = ("SELECT l.phone_number, l.customer_id, l.status, l.roaming_enabled, p.name AS plan, "
                "p.monthly_fee FROM lines l JOIN plans p ON p.id = l.plan_id WHERE l.phone_number = :phone_number")

ACTIONS = [
    action("find_customer_by_email", "Identify the account holder: find the account by the email address they give.",
           "customers", {"email": param("string", "the account's email address")},
           "SELECT id AS customer_id, email, first_name, last_name, account_status FROM customers "
           "WHERE email = :email COLLATE NOCASE"),
    action("get_line_details", "A line of the verified account holder with its plan.", "lines", _LINE, _LINE_RESULT,
           checks=_OWN_LINE),
    action("change_line_plan", "Move an active line of the verified account holder to another available plan.",
           "lines", {**_LINE, "plan_name": param("string", "the exact name of the new plan")}, _LINE_RESULT,
           checks=_OWN_LINE + (in_state("lines", "phone_number", "status", ("active",), "line", "changed"),
                               "SELECT 'plan ' || :plan_name || ' is not available' WHERE NOT EXISTS "
                               "(SELECT 1 FROM plans WHERE name = :plan_name AND is_available = 1)"),
           statements=("UPDATE lines SET plan_id = (SELECT id FROM plans WHERE name = :plan_name) "
                       "WHERE phone_number = :phone_number",)),
    action("enable_roaming", "Enable roaming on an active line of an active account.", "lines", _LINE, _LINE_RESULT,
           checks=_OWN_LINE + (in_state("lines", "phone_number", "status", ("active",), "line", "given roaming"),
                               "SELECT 'roaming needs an active account; this one is ' || account_status FROM "
                               "customers WHERE id = :customer_id AND account_status <> 'active'"),
           statements=("UPDATE lines SET roaming_enabled = 1 WHERE phone_number = :phone_number",)),
    action("reactivate_line", "Reactivate a suspended line of an account without overdue bills.", "lines", _LINE,
           _LINE_RESULT,
           checks=_OWN_LINE + (in_state("lines", "phone_number", "status", ("suspended",), "line", "reactivated"),
                               "SELECT 'the account has an overdue bill; the line cannot be reactivated' WHERE EXISTS "
                               "(SELECT 1 FROM bills WHERE customer_id = :customer_id AND status = 'overdue')"),
           statements=("UPDATE lines SET status = 'active' WHERE phone_number = :phone_number",)),
]
