"""The retail domain's service actions: checked multi-statement SQL tools (core/domains/actions.py)."""

from __future__ import annotations

from ..actions import NOW, TODAY, action, exists, in_state, next_id, owned, param

_ORDER = {"customer_id": param("integer", "id of the verified customer"),
          "order_number": param("string", "the order number, e.g. ORD-123456")}
_OWN_ORDER = (exists("orders", "order_number", "order"), owned("orders", "order_number", "customer_id", "order"))
_ORDER_ID = "(SELECT id FROM orders WHERE order_number = :order_number)"
_ITEM = ("FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id "
         "WHERE o.order_number = :order_number AND p.sku = :sku")
_HAS_ITEM = f"SELECT 'order ' || :order_number || ' has no item ' || :sku WHERE NOT EXISTS (SELECT 1 {_ITEM})"
_WINDOW = ("SELECT 'order ' || :order_number || ' was placed on ' || substr(placed_at, 1, 10) || ', more than 30 "
           f"days ago; returns are accepted only within 30 days' FROM orders WHERE order_number = :order_number "
           f"AND date(placed_at) < date('{TODAY}', '-30 days')")
_RETURNABLE = (f"SELECT 'only ' || (i.quantity - COALESCE((SELECT SUM(r.quantity) FROM returns r "
               f"WHERE r.order_item_id = i.id), 0)) || ' of ' || :sku || ' can still be returned' {_ITEM} "
               f"AND :quantity > i.quantity - COALESCE((SELECT SUM(r.quantity) FROM returns r "
               f"WHERE r.order_item_id = i.id), 0)")
_NEW_RETURN = (f"INSERT INTO returns (id, rma_number, order_item_id, quantity, reason, status, requested_at, "
               f"refund_amount) SELECT {next_id('returns')}, 'RMA-R' || printf('%04d', {next_id('returns')}), i.id, "
               f":quantity, :reason, 'requested', '{NOW}', ROUND(:quantity * i.unit_price, 2) {_ITEM}")
_LAST_RETURN = ("SELECT r.rma_number, o.order_number, o.customer_id, p.sku, r.quantity, r.reason, r.status, "
                "r.refund_amount FROM returns r JOIN order_items i ON i.id = r.order_item_id "
                "JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id "
                "WHERE r.id = (SELECT MAX(id) FROM returns)")
_REASON = param("string", "why the item goes back",
                enum=["changed_mind", "damaged", "not_as_described", "wrong_item"])

ACTIONS = [
    action("find_customer_by_email", "Identify the customer: find their account by the email address they give.",
           "customers", {"email": param("string", "the customer's email address")},
           "SELECT id AS customer_id, email, first_name, last_name, tier, status FROM customers "
           "WHERE email = :email COLLATE NOCASE"),
    action("get_order_details", "An order of the verified customer with its items and shipping address.",
           "orders", _ORDER,
           "SELECT o.order_number, o.customer_id, o.status, o.placed_at, o.shipping_method, o.total, "
           "a.label AS ship_to, a.street AS ship_to_street, p.sku, p.name AS product_name, i.quantity, i.unit_price "
           "FROM orders o JOIN addresses a ON a.id = o.shipping_address_id JOIN order_items i ON i.order_id = o.id "
           "JOIN products p ON p.id = i.product_id WHERE o.order_number = :order_number ORDER BY i.id",
           checks=_OWN_ORDER, returns="rows"),
    action("cancel_pending_order", "Cancel a pending order of the verified customer; its payment is refunded.",
           "orders", _ORDER,
           "SELECT order_number, customer_id, status, total AS refund_amount FROM orders "
           "WHERE order_number = :order_number",
           checks=_OWN_ORDER + (in_state("orders", "order_number", "status", ("pending",), "order", "cancelled"),),
           statements=("UPDATE orders SET status = 'cancelled' WHERE order_number = :order_number",
                       f"UPDATE payments SET status = 'refunded' WHERE order_id = {_ORDER_ID} "
                       f"AND status IN ('authorized', 'captured')")),
    action("modify_pending_order_address", "Ship a pending order to another of the verified customer's addresses.",
           "orders", {**_ORDER, "address_id": param("integer", "id of one of the customer's addresses")},
           "SELECT o.order_number, o.customer_id, o.status, a.label AS ship_to, a.street AS ship_to_street, "
           "a.city AS ship_to_city FROM orders o JOIN addresses a ON a.id = o.shipping_address_id "
           "WHERE o.order_number = :order_number",
           checks=_OWN_ORDER + (in_state("orders", "order_number", "status", ("pending",), "order", "modified"),
                                "SELECT 'address ' || :address_id || ' is not one of this customer''s addresses' "
                                "WHERE NOT EXISTS (SELECT 1 FROM addresses WHERE id = :address_id "
                                "AND customer_id = :customer_id)"),
           statements=("UPDATE orders SET shipping_address_id = :address_id WHERE order_number = :order_number",)),
    action("modify_pending_order_item", "Change the quantity of one item of a pending order; the total and the "
           "authorized payment follow.", "orders",
           {**_ORDER, "sku": param("string", "the item's product SKU"),
            "quantity": param("integer", "the new quantity", minimum=1, maximum=10)},
           f"SELECT o.order_number, o.customer_id, o.status, p.sku, i.quantity, o.total {_ITEM}",
           checks=_OWN_ORDER + (in_state("orders", "order_number", "status", ("pending",), "order", "modified"),
                                _HAS_ITEM),
           statements=(f"UPDATE order_items SET quantity = :quantity WHERE id = (SELECT i.id {_ITEM})",
                       f"UPDATE orders SET total = (SELECT ROUND(SUM(quantity * unit_price), 2) FROM order_items "
                       f"WHERE order_id = {_ORDER_ID}) WHERE order_number = :order_number",
                       f"UPDATE payments SET amount = (SELECT total FROM orders WHERE order_number = :order_number) "
                       f"WHERE order_id = {_ORDER_ID} AND status = 'authorized'")),
    action("return_delivered_item", "Request the return of items of a delivered order (within 30 days of the "
           "order date); the refund goes to the original payment method.", "orders",
           {**_ORDER, "sku": param("string", "the item's product SKU"),
            "quantity": param("integer", "how many to return", minimum=1, maximum=10), "reason": _REASON},
           _LAST_RETURN,
           checks=_OWN_ORDER + (in_state("orders", "order_number", "status", ("delivered",), "order", "returned"),
                                _WINDOW, _HAS_ITEM, _RETURNABLE),
           statements=(_NEW_RETURN,)),
    action("exchange_delivered_item", "Exchange one item of a delivered order (within 30 days) for another "
           "product of the same category: the item is returned and a new pending order ships the new product "
           "to the same address, paid like the original.", "orders",
           {**_ORDER, "sku": param("string", "the SKU of the item to exchange"),
            "new_sku": param("string", "the SKU of the product wanted instead")},
           "SELECT o.order_number AS new_order_number, o.customer_id, o.status, o.total, p.sku, "
           "p.name AS product_name, (SELECT rma_number FROM returns WHERE id = (SELECT MAX(id) FROM returns)) "
           "AS rma_number FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p "
           "ON p.id = i.product_id WHERE o.id = (SELECT MAX(id) FROM orders)",
           checks=_OWN_ORDER + (in_state("orders", "order_number", "status", ("delivered",), "order", "exchanged"),
                                _WINDOW, _HAS_ITEM, _RETURNABLE.replace(":quantity", "1"),
                                "SELECT 'product ' || :new_sku || ' is not available for an exchange of ' || :sku "
                                "WHERE NOT EXISTS (SELECT 1 FROM products n, products p WHERE n.sku = :new_sku "
                                "AND p.sku = :sku AND n.category = p.category AND n.sku <> p.sku "
                                "AND n.status = 'active' AND n.stock_quantity > 0)"),
           statements=(_NEW_RETURN.replace(":quantity", "1").replace(":reason", "'changed_mind'"),
                       f"INSERT INTO orders (id, order_number, customer_id, shipping_address_id, status, "
                       f"shipping_method, placed_at, total) SELECT {next_id('orders')}, 'ORD-N' || "
                       f"printf('%05d', {next_id('orders')}), customer_id, shipping_address_id, 'pending', 'standard', "
                       f"'{NOW}', (SELECT price FROM products WHERE sku = :new_sku) FROM orders "
                       f"WHERE order_number = :order_number",
                       f"INSERT INTO order_items (id, order_id, product_id, quantity, unit_price) SELECT "
                       f"{next_id('order_items')}, (SELECT MAX(id) FROM orders), id, 1, price FROM products "
                       f"WHERE sku = :new_sku",
                       f"INSERT INTO payments (id, order_id, method, amount, status, paid_at) SELECT "
                       f"{next_id('payments')}, (SELECT MAX(id) FROM orders), method, "
                       f"(SELECT price FROM products WHERE sku = :new_sku), 'authorized', '{NOW}' FROM payments "
                       f"WHERE order_id = {_ORDER_ID} AND status <> 'failed' ORDER BY id LIMIT 1",
                       "UPDATE products SET stock_quantity = stock_quantity - 1 WHERE sku = :new_sku")),
]
