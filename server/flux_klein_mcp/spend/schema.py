"""The ledger's schema, one for both backends (`{id}`, `{time}` and `{day}` are each backend's column types), and
the statements that write its rows. The tables are described for people in docs/spending.md. Beside the money, two
small tables hold what replicas share (remote/shared.py): approvals already used (`claims`) and answers on their way
to the replica that asked (`answers`)."""

from __future__ import annotations

#: Column types per backend, so that both hold one schema.
SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id {id},
    at {time} NOT NULL,
    day {day} NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    tier TEXT NOT NULL,
    images INTEGER NOT NULL CHECK (images >= 0),
    micro_usd BIGINT NOT NULL CHECK (micro_usd >= 0),
    source TEXT NOT NULL,
    request_id TEXT,
    generation_id TEXT,
    owner TEXT NOT NULL,
    person TEXT,
    path TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS charges_by_day ON charges (day, provider, model, source, micro_usd, images);
CREATE INDEX IF NOT EXISTS charges_by_request ON charges (request_id);
CREATE INDEX IF NOT EXISTS charges_by_person ON charges (day, person, micro_usd);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    at {time} NOT NULL,
    expires {time} NOT NULL,
    day {day} NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    tier TEXT NOT NULL,
    images INTEGER NOT NULL CHECK (images > 0),
    micro_usd BIGINT NOT NULL CHECK (micro_usd >= 0),
    source TEXT NOT NULL,
    owner TEXT NOT NULL,
    owner_lock BIGINT,
    person TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS imports (
    sha256 TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    at {time} NOT NULL,
    charges INTEGER NOT NULL,
    damaged INTEGER NOT NULL
);
"""

CHARGE_COLUMNS = ("at, day, provider, model, tier, images, micro_usd, source, request_id, generation_id, owner, "
                  "person, path, note")
INSERT_CHARGE = f"INSERT INTO charges ({CHARGE_COLUMNS}) VALUES ({', '.join('?' * 14)})"
RESERVATION_COLUMNS = ("id, at, expires, day, provider, model, tier, images, micro_usd, source, owner, owner_lock, "
                       "person")
# (DO NOTHING: run again after a commit whose answer was lost, a reservation must not fail or count twice.)
INSERT_RESERVATION = (f"INSERT INTO reservations ({RESERVATION_COLUMNS}) VALUES ({', '.join('?' * 13)}) "
                      "ON CONFLICT (id) DO NOTHING")
