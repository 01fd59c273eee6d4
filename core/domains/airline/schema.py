"""The airline database's DDL."""

SCHEMA = """
CREATE TABLE airports (
    id INTEGER PRIMARY KEY,
    iata_code TEXT NOT NULL UNIQUE CHECK (length(iata_code) = 3),
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    country TEXT NOT NULL,
    timezone TEXT NOT NULL
);
CREATE TABLE aircraft (
    id INTEGER PRIMARY KEY,
    tail_number TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL CHECK (model IN ('E175', 'A320', 'B737-800', 'A321neo', 'B787-9')),
    seat_capacity INTEGER NOT NULL CHECK (seat_capacity > 0),
    status TEXT NOT NULL CHECK (status IN ('active', 'maintenance', 'retired')),
    in_service_since TEXT NOT NULL
);
CREATE TABLE flights (
    id INTEGER PRIMARY KEY,
    flight_number TEXT NOT NULL,
    departure_date TEXT NOT NULL,
    origin_airport_id INTEGER NOT NULL REFERENCES airports(id),
    destination_airport_id INTEGER NOT NULL REFERENCES airports(id),
    aircraft_id INTEGER NOT NULL REFERENCES aircraft(id),
    departure_time TEXT NOT NULL,
    arrival_time TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'delayed', 'landed', 'cancelled')),
    base_fare REAL NOT NULL CHECK (base_fare > 0),
    UNIQUE (flight_number, departure_date),
    CHECK (origin_airport_id <> destination_airport_id),
    CHECK (arrival_time > departure_time)
);
CREATE TABLE passengers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    date_of_birth TEXT NOT NULL,
    phone TEXT,
    nationality TEXT NOT NULL CHECK (length(nationality) = 2)
);
CREATE TABLE loyalty_accounts (
    id INTEGER PRIMARY KEY,
    membership_number TEXT NOT NULL UNIQUE,
    passenger_id INTEGER NOT NULL UNIQUE REFERENCES passengers(id),
    tier TEXT NOT NULL CHECK (tier IN ('basic', 'silver', 'gold', 'platinum')),
    points_balance INTEGER NOT NULL CHECK (points_balance >= 0),
    joined_on TEXT NOT NULL
);
CREATE TABLE bookings (
    id INTEGER PRIMARY KEY,
    confirmation_code TEXT NOT NULL UNIQUE,
    passenger_id INTEGER NOT NULL REFERENCES passengers(id),
    flight_id INTEGER NOT NULL REFERENCES flights(id),
    cabin_class TEXT NOT NULL CHECK (cabin_class IN ('economy', 'premium_economy', 'business', 'first')),
    seat_number TEXT NOT NULL,
    fare_paid REAL NOT NULL CHECK (fare_paid >= 0),
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'checked_in', 'flown', 'cancelled')),
    booked_at TEXT NOT NULL,
    UNIQUE (flight_id, seat_number),
    UNIQUE (passenger_id, flight_id)
);
CREATE TABLE baggage (
    id INTEGER PRIMARY KEY,
    tag_number TEXT NOT NULL UNIQUE,
    booking_id INTEGER NOT NULL REFERENCES bookings(id),
    weight_kg REAL NOT NULL CHECK (weight_kg > 0 AND weight_kg <= 32),
    fee REAL NOT NULL CHECK (fee >= 0),
    status TEXT NOT NULL CHECK (status IN ('checked', 'loaded', 'delivered', 'lost'))
);
"""
