"""What retail customers ask for: the service scenarios, each a pick query over the current state, a gold
plan over the domain's actions and the requests in the customer's words (core/tasks/service.py)."""

from __future__ import annotations

from toolturn.core.tasks.service import C, M, Part, R, S, Scenario, Service, Step

from ..actions import TODAY
from .phrasing import ASKS, CHANGES, FACTS, NOTES, REASONS, RECORDS, TERMS
from .policy import POLICY

_ME = "(:email IS NULL OR c.email = :email)"
_CUSTOMER_ORDER = 'SELECT c.email AS "email address", o.order_number AS "order number"'
_ORDERS = "FROM orders o JOIN customers c ON c.id = o.customer_id"
_ITEMS = ("FROM order_items i JOIN orders o ON o.id = i.order_id JOIN customers c ON c.id = o.customer_id "
          "JOIN products p ON p.id = i.product_id")
_IN_WINDOW = (f"o.status = 'delivered' AND date(o.placed_at) >= date('{TODAY}', '-30 days') AND i.quantity - "
              "COALESCE((SELECT SUM(r.quantity) FROM returns r WHERE r.order_item_id = i.id), 0) >= 1")
_WHY = ("CASE i.id % 4 WHEN 0 THEN 'damaged' WHEN 1 THEN 'wrong_item' WHEN 2 THEN 'not_as_described' "
        "ELSE 'changed_mind' END")
_WHY_SAID = ("CASE i.id % 4 WHEN 0 THEN 'it arrived damaged' WHEN 1 THEN 'it is not the item I ordered' "
             "WHEN 2 THEN 'it is not as described' ELSE 'I changed my mind' END")
_CID = R(0, "customer_id")
_DETAILS = Step("get_order_details", {"customer_id": _CID, "order_number": S("order number")})
# A user-oriented customer first asks about the order, then says what they want done with it.
_CHECK = Part(("check the status of my order", "look up my order first", "pull up my order"), (0, 1),
              ids=("order number",),
              report=(("order status", 1, 0, "status"), ("order total", 1, 0, "total")))

# The default task mix (`domain.task_mix` overrides it): kind -> weight, times its difficulty's weight. Most
# customers come about their orders; each kind of change is rarer than a question, and refusals have their own share.
TASK_MIX = {"product_info": 0.8, "order_status": 1.0, "my_orders": 0.6, "cancel_order": 0.4, "change_address": 0.4,
            "change_quantity": 0.4, "return_item": 0.4, "exchange_item": 0.4}

SERVICE = Service(
    changes=CHANGES, facts=FACTS, terms=TERMS, notes=NOTES, asks=ASKS, records=RECORDS, reasons=REASONS,
    builtin_reasons=dict(POLICY.reasons), task_mix=TASK_MIX,
    identify=("find_customer_by_email", "email"), slot="email address", owner_key="customer_id",
    scenarios=(
        Scenario("product_info", "public", 'SELECT name AS "product" FROM products ORDER BY id',
                 (Step("search_products", {"name": S("product")}),),
                 (Part(("tell me the price of the {product}", "tell me what the {product} costs",
                        "let me know how much the {product} is"), (0,), values=("product",),
                       report=(("price", 0, 0, "price"),)),
                  Part(("tell me how many of them you have in stock", "tell me whether you have any in stock",
                        "check how many you have left"), (0,), report=(("stock", 0, 0, "stock_quantity"),)))),
        Scenario("order_status", "read", f"{_CUSTOMER_ORDER} {_ORDERS} WHERE {_ME} ORDER BY o.id", (_DETAILS,),
                 (Part(("tell me where my order stands", "check on my order for me",
                        "tell me what's happening with my order"),
                       (0, 1), ids=("order number",),
                       report=(("order status", 1, 0, "status"),)),
                  Part("tell me what it cost in total", (1,), report=(("order total", 1, 0, "total"),)))),
        Scenario("my_orders", "read",  # a customer with orders to list (the answer's forms speak of several)
                 f'SELECT c.email AS "email address" FROM customers c WHERE {_ME} AND '
                 f"(SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.id) > 1 ORDER BY c.id",
                 (Step("list_orders_for_customer", {"customer_id": _CID}),),
                 (Part(("tell me which orders I have with you", "list the orders on my account",
                        "tell me what orders I've placed with you"), (0, 1),
                       report=(("number of orders", 1, "$len"), ("order numbers", 1, {"$pluck": "order_number"}))),)),
        Scenario("cancel_order", "write", f"{_CUSTOMER_ORDER} {_ORDERS} WHERE o.status = 'pending' AND {_ME} "
                 "ORDER BY o.id",
                 (_DETAILS, Step("cancel_pending_order", {"customer_id": _CID, "order_number": S("order number")})),
                 (_CHECK, Part(("cancel it; I don't need it any more", "cancel it, please; I ordered it by mistake",
                                     "cancel that order"), (2,),
                       report=(("order status", 2, "status"), ("refund amount", 2, "refund_amount"))),), write=2),
        Scenario("change_address", "write",
                 f'{_CUSTOMER_ORDER}, a.label AS "address label" {_ORDERS} JOIN addresses a ON a.customer_id = c.id '
                 f"WHERE o.status = 'pending' AND a.id <> o.shipping_address_id AND {_ME} ORDER BY o.id, a.id",
                 (Step("list_addresses_for_customer", {"customer_id": _CID}),
                  Step("modify_pending_order_address", {"customer_id": _CID, "order_number": S("order number"),
                                                        "address_id": M(1, "label", "address label", "id")})),
                 (Part("tell me which addresses you have on file for me", (0, 1),
                       report=(("address labels", 1, {"$pluck": "label"}),)),
                  Part("send my order to my {address label} address instead", (2,), ids=("order number",),
                       values=("address label",), report=(("new shipping street", 2, "ship_to_street"),))),
                 write=2),
        Scenario("change_quantity", "write",
                 f'{_CUSTOMER_ORDER}, p.name AS "product", CASE WHEN i.quantity > 1 THEN i.quantity - 1 '
                 f'ELSE i.quantity + 1 END AS "new quantity" {_ITEMS} WHERE o.status = \'pending\' AND {_ME} '
                 "ORDER BY i.id",
                 (_DETAILS, Step("modify_pending_order_item", {
                     "customer_id": _CID, "order_number": S("order number"),
                     "sku": M(1, "product_name", "product", "sku"), "quantity": S("new quantity")})),
                 (_CHECK, Part(("change the {product} on it to {new quantity}",
                                "make it {new quantity} of the {product} instead",
                                "change how many {product} I get to {new quantity}"), (2,),
                               values=("product", "new quantity"),
                               report=(("new order total", 2, "total"),))), write=2),
        Scenario("return_item", "write",
                 f'{_CUSTOMER_ORDER}, p.name AS "product", 1 AS "quantity", {_WHY} AS "reason", {_WHY_SAID} AS "why" '
                 f"{_ITEMS} WHERE {_IN_WINDOW} AND {_ME} ORDER BY i.id",
                 (_DETAILS, Step("return_delivered_item", {
                     "customer_id": _CID, "order_number": S("order number"),
                     "sku": M(1, "product_name", "product", "sku"), "quantity": S("quantity"), "reason": C("reason")})),
                 (_CHECK, Part("return {quantity} {product} from it, because {why}", (2,),
                       values=("product", "quantity", "why"),
                       report=(("return number", 2, "rma_number"), ("refund amount", 2, "refund_amount"))),), write=2),
        Scenario("exchange_item", "write",
                 f'{_CUSTOMER_ORDER}, p.name AS "product", n.name AS "new product" {_ITEMS} JOIN products n '
                 f"ON n.category = p.category AND n.id <> p.id AND n.status = 'active' AND n.stock_quantity > 0 "
                 f"WHERE {_IN_WINDOW} AND {_ME} ORDER BY i.id, n.id",
                 (_DETAILS, Step("search_products", {"name": S("new product")}),
                  Step("exchange_delivered_item", {"customer_id": _CID, "order_number": S("order number"),
                                                   "sku": M(1, "product_name", "product", "sku"),
                                                   "new_sku": M(2, "name", "new product", "sku")})),
                 (_CHECK, Part("exchange the {product} from it for the {new product}", (2, 3),
                       values=("product", "new product"),
                       report=(("new order number", 3, "new_order_number"), ("return number", 3, "rma_number"))),),
                 write=3),
        Scenario("refuse_cancel_shipped", "refuse",
                 f'{_CUSTOMER_ORDER}, o.status AS "status" {_ORDERS} WHERE o.status IN (\'processing\', \'shipped\') '
                 f"AND {_ME} ORDER BY o.id", (_DETAILS,),
                 (_CHECK, Part("cancel it", (), kind="refuse", refusal="state"))),
        Scenario("refuse_late_return", "refuse",
                 f'{_CUSTOMER_ORDER}, p.name AS "product", o.placed_at AS "placed at" {_ITEMS} '
                 f"WHERE o.status = 'delivered' AND date(o.placed_at) < date('{TODAY}', '-30 days') AND {_ME} "
                 "ORDER BY i.id", (_DETAILS,),
                 (_CHECK, Part("return the {product} from it", (), kind="refuse", values=("product",), refusal="window",
                               report=(("order date", 1, 0, "placed_at"),)))),
        Scenario("refuse_foreign_order", "refuse",
                 f"{_CUSTOMER_ORDER} FROM customers c JOIN orders o ON o.customer_id <> c.id "
                 f"WHERE o.status = 'pending' AND {_ME} ORDER BY c.id, o.id",
                 (Step("get_order_details", {"customer_id": _CID, "order_number": S("order number")},
                       expect_error=True),),
                 (Part("cancel my order {order number}", (0, 1), kind="refuse", values=("order number",),
                       refusal="ownership"),)),
        Scenario("refuse_unidentified", "refuse",
                 'SELECT p.name AS "product", o.order_number AS "order number" FROM products p JOIN orders o '
                 "ON o.id % 80 = p.id % 80 WHERE o.status = 'pending' ORDER BY p.id, o.id",
                 (Step("search_products", {"name": S("product")}),),
                 (Part("tell me the price of the {product}", (0,), values=("product",),
                       report=(("price", 0, 0, "price"),)),
                  Part("cancel my order {order number}", (),
                       kind="refuse", values=("order number",), refusal="identity", withhold=("email address",)))),
    ),
)
