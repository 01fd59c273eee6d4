"""The telecom database's DDL."""

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    date_of_birth TEXT NOT NULL,
    account_status TEXT NOT NULL CHECK (account_status IN ('active', 'suspended', 'closed')),
    credit_class TEXT NOT NULL CHECK (credit_class IN ('A', 'B', 'C')),
    billing_address TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE plans (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    plan_type TEXT NOT NULL CHECK (plan_type IN ('prepaid', 'postpaid', 'family', 'business')),
    monthly_fee REAL NOT NULL CHECK (monthly_fee >= 0),
    data_allowance_gb REAL CHECK (data_allowance_gb > 0),
    minutes_allowance INTEGER CHECK (minutes_allowance > 0),
    international_roaming INTEGER NOT NULL CHECK (international_roaming IN (0, 1)),
    is_available INTEGER NOT NULL CHECK (is_available IN (0, 1))
);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    imei TEXT NOT NULL UNIQUE CHECK (length(imei) = 15),
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    make TEXT NOT NULL CHECK (make IN ('Apple', 'Samsung', 'Google', 'Motorola')),
    model TEXT NOT NULL,
    purchased_on TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('in_use', 'spare', 'lost', 'replaced'))
);
CREATE TABLE lines (
    id INTEGER PRIMARY KEY,
    phone_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    plan_id INTEGER NOT NULL REFERENCES plans(id),
    device_id INTEGER UNIQUE REFERENCES devices(id),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'terminated')),
    roaming_enabled INTEGER NOT NULL CHECK (roaming_enabled IN (0, 1)),
    activated_on TEXT NOT NULL
);
CREATE TABLE bills (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    billing_period TEXT NOT NULL,
    amount_due REAL NOT NULL CHECK (amount_due >= 0),
    amount_paid REAL NOT NULL CHECK (amount_paid >= 0),
    due_date TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('paid', 'unpaid', 'overdue', 'disputed')),
    UNIQUE (customer_id, billing_period)
);
CREATE TABLE usage_records (
    id INTEGER PRIMARY KEY,
    line_id INTEGER NOT NULL REFERENCES lines(id),
    billing_period TEXT NOT NULL,
    data_used_gb REAL NOT NULL CHECK (data_used_gb >= 0),
    voice_minutes INTEGER NOT NULL CHECK (voice_minutes >= 0),
    sms_count INTEGER NOT NULL CHECK (sms_count >= 0),
    roaming_data_gb REAL NOT NULL DEFAULT 0 CHECK (roaming_data_gb >= 0),
    UNIQUE (line_id, billing_period)
);
CREATE TABLE support_tickets (
    id INTEGER PRIMARY KEY,
    ticket_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    line_id INTEGER REFERENCES lines(id),
    category TEXT NOT NULL CHECK (category IN ('billing', 'network', 'device', 'roaming', 'account')),
    priority TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    status TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    subject TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    resolved_at TEXT,
    CHECK (resolved_at IS NULL OR resolved_at >= opened_at)
);
"""
