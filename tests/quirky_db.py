"""Deterministic SQLite fixtures for tests that import arbitrary databases.

* :func:`build_quirky_db` packs the awkward corners of real-world schemas into
  one small file (quoted/reserved identifiers, non-ASCII names, self and
  composite foreign keys, a table without a primary key, a broken view, rows
  that violate a declared foreign key, BLOBs, an empty table) next to an
  ordinary customers/invoices pair that tasks can be generated from.
* :func:`build_classic_sample_db` builds a Chinook-like music store with the
  real Chinook naming style (singular CamelCase tables, ``ArtistId``-style
  columns, ``NVARCHAR``/``NUMERIC``/``DATETIME`` declared types) standing in
  for a classic sample database that cannot be downloaded in tests.

Run ``python tests/quirky_db.py OUT_DIR`` to write ``quirky.sqlite`` and
``classic.sqlite`` into ``OUT_DIR``.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Iterable, Sequence

# (table, rowid) pairs that `PRAGMA foreign_key_check` reports in the quirky database.
QUIRKY_FK_VIOLATIONS = (("employees", 13), ("employees", 14))

_QUIRKY_SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'suspended'))
);
CREATE TABLE invoices (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    total REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'void')),
    issued_on TEXT NOT NULL
);
CREATE TABLE "order" (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers(id),
    "select" TEXT NOT NULL,
    "group" TEXT,
    "from" TEXT
);
CREATE TABLE "Order Details" (
    id INTEGER PRIMARY KEY,
    "Order ID" INTEGER NOT NULL REFERENCES "order"(id),
    "Product Name" TEXT NOT NULL,
    "Unit Price" REAL NOT NULL,
    Quantity INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE contacts_intl (
    id INTEGER PRIMARY KEY,
    "prénom" TEXT NOT NULL,
    "Straße" TEXT,
    "名前" TEXT,
    "città" TEXT
);
CREATE TABLE employees (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    title TEXT,
    manager_id INTEGER REFERENCES employees(id)
);
CREATE TABLE students (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
);
CREATE TABLE courses (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL
);
CREATE TABLE enrollment (
    student_id INTEGER NOT NULL REFERENCES students(id),
    course_id INTEGER NOT NULL REFERENCES courses(id),
    enrolled_on TEXT NOT NULL,
    PRIMARY KEY (student_id, course_id)
);
CREATE TABLE grades (
    student_id INTEGER NOT NULL,
    course_id INTEGER NOT NULL,
    term TEXT NOT NULL,
    grade TEXT NOT NULL,
    PRIMARY KEY (student_id, course_id, term),
    FOREIGN KEY (student_id, course_id) REFERENCES enrollment(student_id, course_id)
);
CREATE TABLE event_log (
    logged_at TEXT,
    level TEXT,
    message TEXT,
    payload
);
CREATE TABLE photos (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers(id),
    filename TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    data BLOB
);
CREATE TABLE audit_trail (
    id INTEGER PRIMARY KEY,
    happened_at TEXT NOT NULL,
    actor TEXT,
    action TEXT NOT NULL
);
CREATE TABLE staging_import (id INTEGER PRIMARY KEY, raw TEXT);
CREATE VIEW broken_view AS SELECT id, raw FROM staging_import;
DROP TABLE staging_import;
CREATE VIEW open_invoices AS
    SELECT invoices.id AS invoice_id, customers.email, invoices.total
    FROM invoices JOIN customers ON customers.id = invoices.customer_id
    WHERE invoices.status = 'open';
"""

_FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jon",
          "Kira", "Liam", "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara"]
_LAST = ["Adams", "Brooks", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jensen",
         "Khan", "Lopez", "Moreau", "Novak", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber"]
_BASE_DATE = date(2026, 1, 1)


def _write(path: Path, schema: str, rows: Iterable[tuple[str, Sequence[tuple]]]) -> None:
    """Create ``path`` (must not exist) with ``schema`` and rows, foreign keys not enforced."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("BEGIN;\n" + schema)
        for table, table_rows in rows:
            placeholders = ", ".join("?" * len(table_rows[0]))
            conn.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', table_rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        path.unlink(missing_ok=True)
        raise
    conn.close()


def _day(offset: int) -> str:
    return (_BASE_DATE + timedelta(days=offset)).isoformat()


def _quirky_rows(rng: random.Random) -> list[tuple[str, list[tuple]]]:
    customers = [
        (i, f"{_FIRST[i % 20].lower()}.{_LAST[(i * 7) % 20].lower()}{i}@example.com",
         f"{_FIRST[i % 20]} {_LAST[(i * 7) % 20]}", rng.choice(["active"] * 6 + ["inactive"] * 3 + ["suspended"]))
        for i in range(1, 51)
    ]
    invoices = [
        (i, rng.randint(1, 50), round(rng.uniform(5, 500), 2), rng.choice(["open", "paid", "paid", "void"]),
         _day(-rng.randint(1, 365)))
        for i in range(1, 151)
    ]
    orders = [
        (i, rng.randint(1, 50) if i % 4 else None, rng.choice(["standard", "express", "pickup"]),
         rng.choice(["A", "B", None]), rng.choice(["web", "phone", "store"]))
        for i in range(1, 11)
    ]
    products = ["Widget", "Gadget", "Gizmo", "Doohickey", "Sprocket"]
    order_details = [
        (i, (i - 1) // 3 + 1, rng.choice(products), round(rng.uniform(1, 50), 2), rng.randint(1, 5))
        for i in range(1, 28)
    ]
    contacts = [
        (1, "Zoë", "Hauptstraße 5", "山田太郎", "Milano"),
        (2, "François", "Königsallee 12", "佐藤花子", "Napoli"),
        (3, "José", "Rua das Flores 9", "José 🙂", "Città del Vaticano"),
        (4, "Åsa", "Storgatan 1", "Åsa", "Torino"),
        (5, "Łukasz", None, "ルーカス", "Firenze"),
        (6, "Ольга", "Невский проспект 28", "オリガ", None),
        (7, "Nguyễn", "Phố Huế 3", "阮", "Venezia"),
        (8, "Plain", "Main Street 1", "plain", "Roma"),
    ]
    employees = [
        (1, "Ada Adams", "CEO", None),
        (2, "Ben Brooks", "CTO", 1),
        (3, "Chloe Chen", "CFO", 1),
        (4, "Dev Diaz", "Engineering Manager", 2),
        (5, "Elena Evans", "Engineer", 4),
        (6, "Farid Fischer", "Engineer", 4),
        (7, "Grace Garcia", "Engineer", 4),
        (8, "Hugo Hughes", "Accountant", 3),
        (9, "Iris Ito", "Accountant", 3),
        (10, "Jon Jensen", "Intern", 5),
        (11, "Kira Khan", "Support Lead", 1),
        (12, "Liam Lopez", "Support Agent", 11),
        (13, "Maya Moreau", "Contractor", 999),  # manager long gone: violates the FK
        (14, "Nils Novak", "Contractor", 998),  # likewise
    ]
    students = [(i, f"student{i}@uni.example.edu", f"{_FIRST[i + 5]} {_LAST[i]}") for i in range(1, 11)]
    courses = [(1, "CS101", "Intro to Programming"), (2, "CS201", "Data Structures"),
               (3, "MA101", "Calculus I"), (4, "PH101", "Physics I"), (5, "EN101", "Academic Writing")]
    enrollment = sorted({(rng.randint(1, 10), rng.randint(1, 5)) for _ in range(35)})
    enrollment = [(s, c, _day(-rng.randint(100, 400))) for s, c in enrollment]
    grades = [(s, c, term, rng.choice("ABCDF")) for s, c, _ in enrollment
              for term in (["2025-spring", "2025-fall"] if (s + c) % 3 == 0 else ["2025-fall"])]
    event_log = [
        (f"2025-12-{d:02d}T{h:02d}:00:00", rng.choice(["INFO", "WARN", "ERROR"]),
         rng.choice(["login", "sync", "crash"]),
         rng.choice([42, "forty-two", 4.2, None, b"\x00\x01"]))
        for d, h in [(1 + i // 3, (i * 5) % 24) for i in range(18)]
    ]
    event_log += [event_log[0], event_log[0]]  # exact duplicate rows: nothing identifies them
    photos = [
        (1, 1, "avatar.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
        (2, 2, "scan.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(300))),
        (3, 3, "not-utf8.bin", "application/octet-stream", b"\xc3\x28\xa0\xa1\xe2\x28\xa1"),
        (4, 4, "empty.gif", "image/gif", b""),
        (5, None, "missing.png", "image/png", None),
    ]
    return [
        ("customers", customers), ("invoices", invoices), ("order", orders), ("Order Details", order_details),
        ("contacts_intl", contacts), ("employees", employees), ("students", students), ("courses", courses),
        ("enrollment", enrollment), ("grades", grades), ("event_log", event_log), ("photos", photos),
    ]


def build_quirky_db(path: Path) -> None:
    """Write the quirky database to ``path`` (which must not exist)."""
    _write(path, _QUIRKY_SCHEMA, _quirky_rows(random.Random(0)))


_CLASSIC_SCHEMA = """
CREATE TABLE [Artist] (
    [ArtistId] INTEGER NOT NULL,
    [Name] NVARCHAR(120),
    CONSTRAINT [PK_Artist] PRIMARY KEY ([ArtistId])
);
CREATE TABLE [Album] (
    [AlbumId] INTEGER NOT NULL,
    [Title] NVARCHAR(160) NOT NULL,
    [ArtistId] INTEGER NOT NULL,
    CONSTRAINT [PK_Album] PRIMARY KEY ([AlbumId]),
    FOREIGN KEY ([ArtistId]) REFERENCES [Artist] ([ArtistId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE TABLE [Genre] (
    [GenreId] INTEGER NOT NULL,
    [Name] NVARCHAR(120),
    CONSTRAINT [PK_Genre] PRIMARY KEY ([GenreId])
);
CREATE TABLE [MediaType] (
    [MediaTypeId] INTEGER NOT NULL,
    [Name] NVARCHAR(120),
    CONSTRAINT [PK_MediaType] PRIMARY KEY ([MediaTypeId])
);
CREATE TABLE [Track] (
    [TrackId] INTEGER NOT NULL,
    [Name] NVARCHAR(200) NOT NULL,
    [AlbumId] INTEGER,
    [MediaTypeId] INTEGER NOT NULL,
    [GenreId] INTEGER,
    [Composer] NVARCHAR(220),
    [Milliseconds] INTEGER NOT NULL,
    [Bytes] INTEGER,
    [UnitPrice] NUMERIC(10,2) NOT NULL,
    CONSTRAINT [PK_Track] PRIMARY KEY ([TrackId]),
    FOREIGN KEY ([AlbumId]) REFERENCES [Album] ([AlbumId]) ON DELETE NO ACTION ON UPDATE NO ACTION,
    FOREIGN KEY ([GenreId]) REFERENCES [Genre] ([GenreId]) ON DELETE NO ACTION ON UPDATE NO ACTION,
    FOREIGN KEY ([MediaTypeId]) REFERENCES [MediaType] ([MediaTypeId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE TABLE [Employee] (
    [EmployeeId] INTEGER NOT NULL,
    [LastName] NVARCHAR(20) NOT NULL,
    [FirstName] NVARCHAR(20) NOT NULL,
    [Title] NVARCHAR(30),
    [ReportsTo] INTEGER,
    [BirthDate] DATETIME,
    [HireDate] DATETIME,
    [City] NVARCHAR(40),
    [Country] NVARCHAR(40),
    [Phone] NVARCHAR(24),
    [Email] NVARCHAR(60),
    CONSTRAINT [PK_Employee] PRIMARY KEY ([EmployeeId]),
    FOREIGN KEY ([ReportsTo]) REFERENCES [Employee] ([EmployeeId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE TABLE [Customer] (
    [CustomerId] INTEGER NOT NULL,
    [FirstName] NVARCHAR(40) NOT NULL,
    [LastName] NVARCHAR(20) NOT NULL,
    [Company] NVARCHAR(80),
    [City] NVARCHAR(40),
    [Country] NVARCHAR(40),
    [Phone] NVARCHAR(24),
    [Email] NVARCHAR(60) NOT NULL,
    [SupportRepId] INTEGER,
    CONSTRAINT [PK_Customer] PRIMARY KEY ([CustomerId]),
    FOREIGN KEY ([SupportRepId]) REFERENCES [Employee] ([EmployeeId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE TABLE [Invoice] (
    [InvoiceId] INTEGER NOT NULL,
    [CustomerId] INTEGER NOT NULL,
    [InvoiceDate] DATETIME NOT NULL,
    [BillingCity] NVARCHAR(40),
    [BillingCountry] NVARCHAR(40),
    [Total] NUMERIC(10,2) NOT NULL,
    CONSTRAINT [PK_Invoice] PRIMARY KEY ([InvoiceId]),
    FOREIGN KEY ([CustomerId]) REFERENCES [Customer] ([CustomerId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE TABLE [InvoiceLine] (
    [InvoiceLineId] INTEGER NOT NULL,
    [InvoiceId] INTEGER NOT NULL,
    [TrackId] INTEGER NOT NULL,
    [UnitPrice] NUMERIC(10,2) NOT NULL,
    [Quantity] INTEGER NOT NULL,
    CONSTRAINT [PK_InvoiceLine] PRIMARY KEY ([InvoiceLineId]),
    FOREIGN KEY ([InvoiceId]) REFERENCES [Invoice] ([InvoiceId]) ON DELETE NO ACTION ON UPDATE NO ACTION,
    FOREIGN KEY ([TrackId]) REFERENCES [Track] ([TrackId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE TABLE [Playlist] (
    [PlaylistId] INTEGER NOT NULL,
    [Name] NVARCHAR(120),
    CONSTRAINT [PK_Playlist] PRIMARY KEY ([PlaylistId])
);
CREATE TABLE [PlaylistTrack] (
    [PlaylistId] INTEGER NOT NULL,
    [TrackId] INTEGER NOT NULL,
    CONSTRAINT [PK_PlaylistTrack] PRIMARY KEY ([PlaylistId], [TrackId]),
    FOREIGN KEY ([PlaylistId]) REFERENCES [Playlist] ([PlaylistId]) ON DELETE NO ACTION ON UPDATE NO ACTION,
    FOREIGN KEY ([TrackId]) REFERENCES [Track] ([TrackId]) ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE INDEX [IFK_AlbumArtistId] ON [Album] ([ArtistId]);
CREATE INDEX [IFK_TrackAlbumId] ON [Track] ([AlbumId]);
CREATE INDEX [IFK_CustomerSupportRepId] ON [Customer] ([SupportRepId]);
CREATE INDEX [IFK_InvoiceCustomerId] ON [Invoice] ([CustomerId]);
CREATE INDEX [IFK_InvoiceLineInvoiceId] ON [InvoiceLine] ([InvoiceId]);
"""

_ADJ = ["Electric", "Silent", "Golden", "Broken", "Midnight", "Velvet", "Wild", "Crimson", "Lonely", "Neon"]
_NOUN = ["Horizon", "River", "Echo", "Machine", "Garden", "Signal", "Harbor", "Mirror", "Engine", "Storm"]
_GENRES = ["Rock", "Jazz", "Metal", "Alternative & Punk", "Blues", "Latin", "Classical", "Pop"]
_MEDIA = ["MPEG audio file", "Protected AAC audio file", "Protected MPEG-4 video file",
          "Purchased AAC audio file", "AAC audio file"]
_PLACES = [("São Paulo", "Brazil"), ("Berlin", "Germany"), ("Paris", "France"), ("Oslo", "Norway"),
           ("Toronto", "Canada"), ("Prague", "Czech Republic"), ("Chicago", "USA"), ("Lisbon", "Portugal")]


def _chinook_datetime(day: date) -> str:
    return f"{day.isoformat()} 00:00:00"


def _classic_rows(rng: random.Random) -> list[tuple[str, list[tuple]]]:
    def title() -> str:
        return f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"

    def artist(i: int) -> str:
        return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}s" if i % 3 else f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"

    artists = [(i, artist(i)) for i in range(1, 16)]
    albums = [(i, title(), rng.randint(1, 15)) for i in range(1, 26)]
    genres = list(enumerate(_GENRES, start=1))
    media = list(enumerate(_MEDIA, start=1))
    tracks = []
    for i in range(1, 121):
        media_type = 3 if i % 25 == 0 else rng.choice([1, 1, 1, 2, 4, 5])
        millis = rng.randint(95_000, 420_000) if media_type != 3 else rng.randint(1_200_000, 2_800_000)
        tracks.append((i, title(), (i - 1) // 5 + 1 if i <= 115 else None, media_type, rng.randint(1, len(_GENRES)),
                       rng.choice([None, f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"]), millis, millis * 32,
                       1.99 if media_type == 3 else 0.99))
    employees = [
        (1, "Adams", "Andrew", "General Manager", None),
        (2, "Edwards", "Nancy", "Sales Manager", 1),
        (3, "Peacock", "Jane", "Sales Support Agent", 2),
        (4, "Park", "Margaret", "Sales Support Agent", 2),
        (5, "Johnson", "Steve", "Sales Support Agent", 2),
        (6, "Mitchell", "Michael", "IT Manager", 1),
        (7, "King", "Robert", "IT Staff", 6),
        (8, "Callahan", "Laura", "IT Staff", 6),
    ]
    employees = [(*e, _chinook_datetime(date(1960 + e[0] * 3, e[0], 10 + e[0])),
                  _chinook_datetime(date(2002, e[0], 1 + e[0] * 2)), "Calgary", "Canada",
                  f"+1 (403) 262-{3440 + e[0]}", f"{e[2].lower()}@chinookcorp.com") for e in employees]
    customers = []
    for i in range(1, 41):
        city, country = rng.choice(_PLACES)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        customers.append((i, first, last, rng.choice([None, None, f"{rng.choice(_NOUN)} Ltd."]), city, country,
                          f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                          f"{first.lower()}.{last.lower()}{i}@example.com", rng.choice([3, 4, 5])))
    invoices, lines = [], []
    for i in range(1, 61):
        customer = rng.choice(customers)
        picked = rng.sample(tracks, rng.choice([1, 2, 2, 3, 4, 6]))
        for track in picked:
            lines.append((len(lines) + 1, i, track[0], track[8], 1))
        invoices.append((i, customer[0], _chinook_datetime(date(2021, 1, 1) + timedelta(days=i * 6)), customer[4],
                         customer[5], round(sum(track[8] for track in picked), 2)))
    playlists = [(1, "Music"), (2, "Movies"), (3, "Grunge"), (4, "Classical")]
    playlist_tracks = sorted({(rng.randint(1, 4), rng.randint(1, 120)) for _ in range(70)})
    return [
        ("Artist", artists), ("Album", albums), ("Genre", genres), ("MediaType", media), ("Track", tracks),
        ("Employee", employees), ("Customer", customers), ("Invoice", invoices), ("InvoiceLine", lines),
        ("Playlist", playlists), ("PlaylistTrack", playlist_tracks),
    ]


def build_classic_sample_db(path: Path) -> None:
    """Write the Chinook-like sample database to ``path`` (which must not exist)."""
    _write(path, _CLASSIC_SCHEMA, _classic_rows(random.Random(0)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/quirky_db.py OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    build_quirky_db(out / "quirky.sqlite")
    build_classic_sample_db(out / "classic.sqlite")
    print(f"wrote {out / 'quirky.sqlite'} and {out / 'classic.sqlite'}")
