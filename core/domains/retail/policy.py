"""The retail domain's description and policy (core/policy.py: the text and the checkable rules)."""

from __future__ import annotations

from toolturn.core.policy import Identity, Policy, StateRule

DESCRIPTION = (
    "Northwind Goods is an online retailer that sells electronics, home goods, apparel, "
    "sports gear, books and toys and ships orders to customers across the United States."
)

POLICY = Policy(
    name="retail",
    preamble="You are a customer-service assistant for Northwind Goods, an online retailer.",
    identity=Identity(table="customers", key="customer_id", tools={"find_customer_by_email": "email"},
                      by="the email address on their account", records="account or order details"),
    states=(
        StateRule("orders", "status", ("pending",),
                  ("cancel_pending_order", "modify_pending_order_address", "modify_pending_order_item",
                   "update_order", "delete_order"),
                  "Only orders with status 'pending' may be modified (items, quantities, shipping address) or "
                  "cancelled; orders that are 'processing' or 'shipped' cannot be changed: explain this instead "
                  "of trying.", tables=("order_items", "payments")),
        StateRule("orders", "status", ("delivered",), ("return_delivered_item", "exchange_delivered_item"),
                  "Returns and exchanges are possible only for items of 'delivered' orders, within 30 days of "
                  "the order date, for at most the quantity purchased.", tables=("returns",)),
    ),
    private={"customers": ("email", "first_name", "last_name", "phone"), "addresses": ("street", "zip_code"),
             "orders": ("order_number",), "returns": ("rma_number",)},
    reasons={"identity": "I can only look at or change orders after verifying your identity with the email "
                         "address on your account",
             "state": "order {order number} is {status}, and only pending orders can be changed or cancelled",
             "window": "order {order number} was placed on {placed at}, and returns are accepted only within "
                       "30 days of the order date",
             "ownership": "order {order number} is not on your account, so I can't access or change it"},
    notes=("Refunds go back to the original payment method; never promise an amount that differs from the "
           "recorded price.",
           "If a tool call fails or returns an error, say so honestly; never pretend an action succeeded.",
           "Be concise and factual; do not invent products, prices, stock levels or order details."),
)
