"""Built-in domain: an online retailer (customers, catalogue, orders, returns)."""

from __future__ import annotations

from pathlib import Path

from toolturn.core.policy import Identity, Policy, StateRule
from toolturn.core.tasks.service import C, M, Part, R, S, Scenario, Service, Step

from ._seed import (
    days_since_reference,
    digits,
    iso_datetime,
    make_generators,
    money,
    people,
    unique,
    us_phone,
    weighted,
    write_database,
)
from .actions import NOW, TODAY, action, exists, in_state, next_id, owned, param

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

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    phone TEXT,
    tier TEXT NOT NULL CHECK (tier IN ('standard', 'silver', 'gold', 'platinum')),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    created_at TEXT NOT NULL
);
CREATE TABLE addresses (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    label TEXT NOT NULL CHECK (label IN ('home', 'work', 'other')),
    street TEXT NOT NULL,
    city TEXT NOT NULL,
    state TEXT NOT NULL,
    zip_code TEXT NOT NULL,
    country TEXT NOT NULL,
    is_default INTEGER NOT NULL CHECK (is_default IN (0, 1))
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL CHECK (category IN ('electronics', 'home', 'apparel', 'sports', 'books', 'toys')),
    price REAL NOT NULL CHECK (price > 0),
    stock_quantity INTEGER NOT NULL CHECK (stock_quantity >= 0),
    status TEXT NOT NULL CHECK (status IN ('active', 'discontinued'))
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    order_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    shipping_address_id INTEGER NOT NULL REFERENCES addresses(id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'shipped', 'delivered', 'cancelled')),
    shipping_method TEXT NOT NULL CHECK (shipping_method IN ('standard', 'express', 'overnight')),
    placed_at TEXT NOT NULL,
    total REAL NOT NULL CHECK (total >= 0)
);
CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price REAL NOT NULL CHECK (unit_price > 0),
    UNIQUE (order_id, product_id)
);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    method TEXT NOT NULL CHECK (method IN ('credit_card', 'paypal', 'gift_card', 'bank_transfer')),
    amount REAL NOT NULL CHECK (amount >= 0),
    status TEXT NOT NULL CHECK (status IN ('authorized', 'captured', 'refunded', 'failed')),
    paid_at TEXT NOT NULL
);
CREATE TABLE returns (
    id INTEGER PRIMARY KEY,
    rma_number TEXT NOT NULL UNIQUE,
    order_item_id INTEGER NOT NULL REFERENCES order_items(id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    reason TEXT NOT NULL CHECK (reason IN ('damaged', 'wrong_item', 'not_as_described', 'changed_mind')),
    status TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'refunded')),
    requested_at TEXT NOT NULL,
    refund_amount REAL CHECK (refund_amount >= 0)
);
"""

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
_CHECK = Part("check the status of my order", (0, 1), ids=("order number",),
              report=(("order status", 1, 0, "status"), ("order total", 1, 0, "total")))

SERVICE = Service(
    identify=("find_customer_by_email", "email"), slot="email address", owner_key="customer_id",
    scenarios=(
        Scenario("product_info", "public", 'SELECT name AS "product" FROM products ORDER BY id',
                 (Step("search_products", {"name": S("product")}),),
                 (Part("tell me the price of the {product}", (0,), values=("product",), report=(("price", 0, 0, "price"),)),
                  Part("tell me how many of them you have in stock", (0,), report=(("stock", 0, 0, "stock_quantity"),)))),
        Scenario("order_status", "read", f"{_CUSTOMER_ORDER} {_ORDERS} WHERE {_ME} ORDER BY o.id", (_DETAILS,),
                 (Part("tell me where my order stands", (0, 1), ids=("order number",),
                       report=(("order status", 1, 0, "status"),)),
                  Part("tell me what it cost in total", (1,), report=(("order total", 1, 0, "total"),)))),
        Scenario("my_orders", "read",
                 f'SELECT c.email AS "email address" FROM customers c WHERE {_ME} AND EXISTS '
                 f"(SELECT 1 FROM orders o WHERE o.customer_id = c.id) ORDER BY c.id",
                 (Step("list_orders_for_customer", {"customer_id": _CID}),),
                 (Part("tell me which orders I have with you", (0, 1),
                       report=(("number of orders", 1, "$len"), ("order numbers", 1, {"$pluck": "order_number"}))),)),
        Scenario("cancel_order", "write", f"{_CUSTOMER_ORDER} {_ORDERS} WHERE o.status = 'pending' AND {_ME} "
                 "ORDER BY o.id",
                 (_DETAILS, Step("cancel_pending_order", {"customer_id": _CID, "order_number": S("order number")})),
                 (_CHECK, Part("cancel it; I don't need it any more", (2,),
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
                 (_CHECK, Part("change the {product} on it to {new quantity}", (2,), values=("product", "new quantity"),
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
                  Part("cancel my order {order number}, but I'd rather not give you my email address", (),
                       kind="refuse", values=("order number",), refusal="identity", withhold=("email address",)))),
    ),
)

# category -> (price range, product nouns)
_CATALOGUE = {
    "electronics": ((15, 900), ["Headphones", "Charger", "Speaker", "Monitor", "Keyboard", "Webcam", "Tablet",
                                "Router"]),
    "home": ((8, 400), ["Lamp", "Blender", "Kettle", "Pillow", "Rug", "Skillet", "Vacuum", "Towel Set"]),
    "apparel": ((10, 220), ["Jacket", "Sneakers", "Hoodie", "T-Shirt", "Jeans", "Scarf", "Beanie", "Raincoat"]),
    "sports": ((10, 600), ["Yoga Mat", "Dumbbells", "Tent", "Helmet", "Water Bottle", "Backpack", "Bike Lock"]),
    "books": ((6, 60), ["Cookbook", "Novel", "Atlas", "Field Guide", "Biography", "Workbook"]),
    "toys": ((5, 150), ["Puzzle", "Building Set", "Plush Bear", "Board Game", "Kite", "Robot Kit"]),
}
_ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Essential", "Pro", "Smart", "Ultra", "Vintage", "Wireless"]

N_CUSTOMERS = 150
N_PRODUCTS = 80
N_ORDERS = 300


def _customer_details(fake, rng):
    return (us_phone(rng), weighted(rng, {"standard": 60, "silver": 22, "gold": 13, "platinum": 5}),
            weighted(rng, {"active": 90, "suspended": 6, "closed": 4}), iso_datetime(rng, -1500, -60))


def _addresses(fake, rng, customers):
    rows = []
    for customer in customers:
        labels = rng.sample(["home", "work", "other"], weighted(rng, {1: 55, 2: 35, 3: 10}))
        for index, label in enumerate(labels):
            rows.append((
                len(rows) + 1, customer[0], label, fake.street_address(), fake.city(),
                fake.state_abbr(include_territories=False), fake.postcode(), "US", int(index == 0),
            ))
    return rows


def _products(rng):
    names: set[str] = set()
    skus: set[str] = set()
    categories = list(_CATALOGUE)
    rows = []
    for pid in range(1, N_PRODUCTS + 1):
        category = categories[(pid - 1) % len(categories)]
        (low, high), nouns = _CATALOGUE[category]
        name = unique(lambda: f"{rng.choice(_ADJECTIVES)} {rng.choice(nouns)}", names)
        status = weighted(rng, {"active": 88, "discontinued": 12})
        in_stock = status == "active" and rng.random() > 0.08
        rows.append((
            pid, unique(lambda: f"{category[:3].upper()}-{digits(rng, 5)}", skus), name, category,
            money(rng.randint(low, high) - 0.01), rng.randint(1, 300) if in_stock else 0, status,
        ))
    return rows


_ORDER_STATUS = {"pending": 12, "processing": 10, "shipped": 15, "delivered": 53, "cancelled": 10}
_ORDER_AGE_DAYS = {"pending": (-3, 0), "processing": (-5, -1), "shipped": (-12, -2),
                   "delivered": (-365, -10), "cancelled": (-365, -1)}


def _orders_and_items(rng, customers, addresses, products):
    addresses_by_customer: dict[int, list[int]] = {}
    for address in addresses:
        addresses_by_customer.setdefault(address[1], []).append(address[0])
    orders, items = [], []
    order_numbers: set[str] = set()
    for oid in range(1, N_ORDERS + 1):
        customer_id = rng.choice(customers)[0]
        status = weighted(rng, _ORDER_STATUS)
        total = 0.0
        for product in rng.sample(products, weighted(rng, {1: 25, 2: 30, 3: 25, 4: 12, 5: 8})):
            quantity = weighted(rng, {1: 70, 2: 20, 3: 7, 4: 3})
            items.append((len(items) + 1, oid, product[0], quantity, product[4]))
            total += quantity * product[4]
        orders.append((
            oid, unique(lambda: f"ORD-{digits(rng, 6)}", order_numbers), customer_id,
            rng.choice(addresses_by_customer[customer_id]), status,
            weighted(rng, {"standard": 70, "express": 22, "overnight": 8}),
            iso_datetime(rng, *_ORDER_AGE_DAYS[status]), money(total),
        ))
    return orders, items


def _payments(rng, orders):
    rows = []
    for order in orders:
        oid, status, placed_at, total = order[0], order[4], order[6], order[7]
        method = weighted(rng, {"credit_card": 62, "paypal": 25, "gift_card": 8, "bank_transfer": 5})
        if rng.random() < 0.04:  # a declined first attempt before the real one
            rows.append((len(rows) + 1, oid, method, total, "failed", placed_at))
        payment_status = {"pending": "authorized", "cancelled": "refunded"}.get(status, "captured")
        rows.append((len(rows) + 1, oid, method, total, payment_status, placed_at))
    return rows


def _returns(rng, orders, items):
    delivered = {order[0]: order[6] for order in orders if order[4] == "delivered"}
    candidates = [item for item in items if item[1] in delivered]
    rows = []
    rmas: set[str] = set()
    for item in sorted(rng.sample(candidates, 45)):
        offset = days_since_reference(delivered[item[1]])
        quantity = rng.randint(1, item[3])
        status = weighted(rng, {"requested": 25, "approved": 20, "rejected": 15, "refunded": 40})
        rows.append((
            len(rows) + 1, unique(lambda: f"RMA-{digits(rng, 5)}", rmas), item[0], quantity,
            weighted(rng, {"damaged": 30, "wrong_item": 15, "not_as_described": 25, "changed_mind": 30}),
            status, iso_datetime(rng, offset + 3, min(offset + 30, -1)),
            money(quantity * item[4]) if status == "refunded" else None,
        ))
    return rows


def build(path: Path, seed: int) -> None:
    """Create the retail database at ``path`` (must not exist) from ``seed``."""
    fake, rng = make_generators("retail", seed)
    customers = people(fake, rng, N_CUSTOMERS, _customer_details)
    addresses = _addresses(fake, rng, customers)
    products = _products(rng)
    orders, items = _orders_and_items(rng, customers, addresses, products)
    write_database(path, SCHEMA, {
        "customers": customers,
        "addresses": addresses,
        "products": products,
        "orders": orders,
        "order_items": items,
        "payments": _payments(rng, orders),
        "returns": _returns(rng, orders, items),
    })
