"""The retail database's DDL."""

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
