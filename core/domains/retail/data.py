"""The retail database's seeded content (Faker and one RNG per domain and seed, core/domains/_seed.py)."""

from __future__ import annotations

from pathlib import Path

from .._seed import (
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
from .schema import SCHEMA

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
