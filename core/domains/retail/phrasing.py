"""How the retail service words a change it proposes: the customer's own terms, with what they need to decide.

`{argument}` is the action's argument as the customer knows it (a product by its name, an address by its
label, never an internal id they did not give); `{term}` is one of the change's terms (`TERMS`: computed from
its arguments and the rows read before it, e.g. the price difference); any other `{field}` is read from the
task's earlier results.
"""

from __future__ import annotations

from toolturn.core.tasks.types import format_value

CHANGES = {
    "cancel_pending_order": (
        "cancel order {order_number}, and the {total} you paid goes back to your original payment method",
        "cancel order {order_number} and refund the {total} to the card or account you paid with",
        "cancel order {order_number}; you'd get the full {total} back on your original payment method",
        "cancel order {order_number}, refunding all {total} of it",
        "cancel order {order_number} right away and refund its {total} in full"),
    "modify_pending_order_address": (
        "send order {order_number} to your {address_id} address instead",
        "change the delivery of order {order_number} to your {address_id} address",
        "change order {order_number} to ship to your {address_id} address rather than the current one",
        "set order {order_number} to go to your {address_id} address; nothing else about it changes",
        "update order {order_number} so it goes to your {address_id} address"),
    "modify_pending_order_item": (
        "change the {sku} on order {order_number} to a quantity of {quantity}, which takes the total from {total} "
        "to {new_total} ({difference})",
        "set the {sku} on order {order_number} to {quantity}; the order total goes from {total} to {new_total}, "
        "{difference}",
        "change it to {quantity} of the {sku} on order {order_number}: {difference}, for a new total of {new_total}",
        "update order {order_number} to {quantity} of the {sku}, so you'd pay {new_total} instead of {total}",
        "change the quantity of the {sku} on order {order_number} to {quantity}; that's {difference}, "
        "{new_total} in total"),
    "return_delivered_item": (
        "start a return of {quantity} of the {sku} from order {order_number} (reason: {reason}), and refund "
        "{refund} to your original payment method",
        "set up a return for {quantity} of the {sku} on order {order_number}, with the reason given as {reason}; "
        "you'd get {refund} back on your original payment method",
        "create a return of {quantity} of the {sku} from order {order_number} (your reason: {reason}), with a refund "
        "of {refund}",
        "add a return of {quantity} of the {sku} from order {order_number} (reason: {reason}); {refund} "
        "goes back to how you paid",
        "return {quantity} of the {sku} from order {order_number} with the reason {reason}, refunding {refund}"),
    "exchange_delivered_item": (
        "exchange the {sku} from order {order_number} for the {new_sku}, which costs {price} against the {paid} "
        "you paid ({difference}) and ships to the same address",
        "swap the {sku} from order {order_number} for the {new_sku}: you're refunded the {paid} you paid and "
        "charged {price}, {difference}",
        "exchange the {sku} on order {order_number} for the {new_sku} at {price}; you paid {paid}, so that's "
        "{difference}, and it ships to the same address",
        "replace the {sku} from order {order_number} with the {new_sku}; it costs {price} where you paid {paid}, "
        "{difference}",
        "return the {sku} from order {order_number} and send you the {new_sku} for {price} instead ({difference})"),
}


def _money(amount: float) -> str:
    return format_value(round(abs(amount), 2))


def _difference(new: float, old: float, unit: str = "") -> str:
    diff = round(new - old, 2)
    if not diff:
        return "no difference in price"
    return f"{_money(diff)}{unit} {'more' if diff > 0 else 'less'}"


def _item(args: dict, rows: list[dict]) -> dict:
    """The order's line the change is about (the order details read before it)."""
    return next(r for r in rows if r.get("order_number") == args["order_number"] and r.get("sku") == args["sku"]
                and "unit_price" in r)


def _quantity_terms(args: dict, rows: list[dict]) -> dict:
    item = _item(args, rows)
    lines = [r for r in rows if r.get("order_number") == args["order_number"] and "unit_price" in r]
    old = round(sum(r["quantity"] * r["unit_price"] for r in lines), 2)
    new = round(old + (args["quantity"] - item["quantity"]) * item["unit_price"], 2)  # the action's own sum
    return {"new_total": new, "difference": _difference(new, item["total"])}


def _cancel_terms(args: dict, rows: list[dict]) -> dict:
    return {"total": next(r["total"] for r in rows if r.get("order_number") == args["order_number"] and "total" in r)}


def _return_terms(args: dict, rows: list[dict]) -> dict:
    return {"refund": round(args["quantity"] * _item(args, rows)["unit_price"], 2)}


def _exchange_terms(args: dict, rows: list[dict]) -> dict:
    paid = _item(args, rows)["unit_price"]
    price = next(r["price"] for r in rows if r.get("sku") == args["new_sku"] and "price" in r)
    diff = _difference(price, paid)
    return {"paid": paid, "price": price, "difference": diff if diff.startswith("no ") else f"{diff} than before"}


TERMS = {"cancel_pending_order": _cancel_terms, "modify_pending_order_item": _quantity_terms,
         "return_delivered_item": _return_terms, "exchange_delivered_item": _exchange_terms}

# what a customer needs to know about a row their request reads
NOTES = {("status", "discontinued"): ("note that it's discontinued, so it won't be restocked",
                                      "it has been discontinued, so we won't get more in",
                                      "just so you know, it's a discontinued product",
                                      "keep in mind it's discontinued and won't come back into stock")}

# report label -> the ways the service states that value ({v}), a clause each
FACTS = {
    "price": ("the price is {v}", "it costs {v}", "it sells for {v}", "it's priced at {v}", "it goes for {v}",
              "we list it at {v}", "it's {v}", "the current price is {v}", "you'd pay {v} for it",
              "it retails at {v}"),
    "stock": ("we have {v} in stock", "the stock is {v}", "the stock count is {v}", "{v} are in stock",
              "our warehouse holds {v}", "the inventory shows {v} units", "there are {v} available",
              "{v} units are on hand", "we've got {v} left", "stock stands at {v}"),
    "order status": ("the order is {v}", "its status is {v}", "the order status is {v}", "it's currently {v}",
                     "your order shows as {v}", "the system has it as {v}", "it's marked {v}",
                     "right now it's {v}"),
    "order total": ("the total is {v}", "it came to {v} in total", "the order total is {v}", "you paid {v} for it",
                    "its total comes to {v}", "the amount charged is {v}", "it cost {v} altogether",
                    "the order was {v} in total", "the bill came to {v}"),
    "number of orders": ("the number of orders is {v}", "orders on your account: {v}", "I count {v} in total",
                         "you have {v} orders with us", "there are {v} orders on your account"),
    "order numbers": ("their numbers are {v}", "the order numbers are {v}", "they are {v}",
                      "they're numbered {v}", "those are {v}"),
    "address labels": ("you have these addresses on file: {v}", "the addresses on file are labelled {v}",
                       "your saved addresses are {v}", "these are saved for you: {v}", "the addresses I see are {v}"),
    "new shipping street": ("it now ships to {v}", "the new shipping street is {v}", "the delivery address is now {v}",
                            "it's going to {v} now", "the parcel will go to {v}"),
    "new order total": ("the new total is {v}", "the order now comes to {v}", "your new order total is {v}",
                        "the total is now {v}", "it now costs {v} altogether"),
    "refund amount": ("the refund is {v}", "{v} will be refunded", "you'll get {v} back",
                      "a refund of {v} is on its way", "{v} goes back to you"),
    "return number": ("the return number is {v}", "your return reference is {v}", "the return is registered as {v}",
                      "quote {v} for the return", "the return's reference is {v}"),
    "new order number": ("the new order number is {v}", "the replacement ships as order {v}", "your new order is {v}",
                         "the replacement is order {v}", "the new item comes as order {v}"),
    "order date": ("the order was placed on {v}", "it was ordered on {v}", "the order date is {v}",
                   "you placed it on {v}", "it dates from {v}"),
}

# slot -> the service's own ways to ask for it ({s}: the slot, named so that any reader finds it)
ASKS = {
    "email address": ("To pull up your account, I'll need the {s} you shop with.",
                      "Which {s} did you use for your orders?", "What {s} is your store account under?",
                      "Let me find your account first: what's the {s} on it?",
                      "Could you give me the {s} from your order confirmation emails?"),
    "order number": ("What's the {s}? It starts with ORD.", "What's the {s}? It's on your receipt.",
                     "Could you read me the {s} from your confirmation email?",
                     "Which {s} is it about?", "I'll need the {s}; it begins with ORD-."),
}

# refusal reason -> other ways to give the policy's reason (its placeholders, no others); used only while the
# policy in effect gives the built-in reason (core/domains/retail/policy.py), never over a policy file's own
REASONS = {
    "identity": ("I can't open any order until I've verified you with the email address on your account",
                 "orders are only accessible once you're verified by the email address on the account",
                 "without verifying you by the account's email address I can't look at or change an order"),
    "state": ("order {order number} is already {status}; only pending orders can still be changed or cancelled",
              "once an order is past pending, as order {order number} is ({status}), it can't be changed or "
              "cancelled",
              "order {order number} shows as {status}, and changes or cancellations are only possible while "
              "an order is pending"),
    "window": ("order {order number} dates from {placed at}, and we take returns only within 30 days of the "
               "order date",
               "the 30-day return window has closed for order {order number}, which was placed on {placed at}",
               "returns must be made within 30 days of ordering, and order {order number} was placed on {placed at}"),
    "ownership": ("order {order number} belongs to a different account, so I can't open or change it",
                  "I can only work with orders on your own account, and order {order number} isn't one of them",
                  "order {order number} isn't linked to your account, so it's off limits to me"),
}

# slot -> how an answer names the record the customer asked about ("For order X, ...")
RECORDS = {"order number": "order {v}", "product": "the {v}"}
