-- Renkei on SQLite, the embedded default: the same tables as on PostgreSQL (see
-- `migrations/postgres`), in SQLite's types. Lists (an endpoint's secrets, a
-- subscription's event types…) are JSON arrays; ids are 16-byte UUID blobs; times are
-- RFC 3339 text. The store writes through one connection, so every write transaction
-- is serialised and no row locks are needed.

-- ─── Registry ────────────────────────────────────────────────────────────────────────
CREATE TABLE facilities (
    code        TEXT PRIMARY KEY CHECK (length(code) = 10 AND code NOT GLOB '*[^0-9]*'),
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('hospital', 'clinic', 'visiting_nursing', 'care_management', 'care_facility', 'pharmacy', 'other')),
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE participants (
    id             TEXT PRIMARY KEY,
    facility_code  TEXT NOT NULL REFERENCES facilities (code),
    name           TEXT NOT NULL,
    -- last per-participant sequence number handed to a delivery (receivers detect gaps)
    last_sequence  INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL
) STRICT;

CREATE TABLE endpoints (
    participant_id  TEXT NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    url             TEXT NOT NULL,
    -- Standard Webhooks secrets (whsec_...), a JSON array; every one signs.
    secrets         TEXT NOT NULL CHECK (json_array_length(secrets) >= 1),
    enabled         INTEGER NOT NULL DEFAULT 1,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (participant_id, name)
) STRICT;

CREATE TABLE subscriptions (
    participant_id     TEXT NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    endpoint_name      TEXT NOT NULL,
    -- JSON arrays; an empty `source_facilities` takes events from any facility
    event_types        TEXT NOT NULL CHECK (json_type(event_types) = 'array'),
    source_facilities  TEXT NOT NULL DEFAULT '[]' CHECK (json_type(source_facilities) = 'array'),
    updated_at         TEXT NOT NULL,
    PRIMARY KEY (participant_id, name),
    FOREIGN KEY (participant_id, endpoint_name) REFERENCES endpoints (participant_id, name) ON DELETE CASCADE
) STRICT;

CREATE TABLE patients (
    id          TEXT PRIMARY KEY,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE patient_identifiers (
    system      TEXT NOT NULL,
    value       TEXT NOT NULL,
    patient_id  TEXT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    PRIMARY KEY (system, value)
) STRICT;
CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);

CREATE TABLE care_relationships (
    patient_id      TEXT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    participant_id  TEXT NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    valid_from      TEXT NOT NULL,
    valid_until     TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (patient_id, participant_id)
) STRICT;

CREATE TABLE consents (
    id            TEXT PRIMARY KEY,
    patient_id    TEXT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    scope         TEXT NOT NULL CHECK (scope IN ('blanket', 'facilities')),
    facilities    TEXT NOT NULL DEFAULT '[]' CHECK (json_type(facilities) = 'array'),
    basis         TEXT NOT NULL CHECK (basis IN ('written', 'oral_recorded')),
    valid_from    TEXT NOT NULL,
    valid_until   TEXT,
    withdrawn_at  TEXT,
    updated_at    TEXT NOT NULL
) STRICT;
CREATE INDEX consents_patient ON consents (patient_id);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- SHA-256 of the key; the key itself is shown once and never stored.
    key_sha256  BLOB NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;

-- ─── Ingest ──────────────────────────────────────────────────────────────────────────
CREATE TABLE ingests (
    source_key    TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    event_id      BLOB NOT NULL UNIQUE,
    event_type    TEXT NOT NULL,
    raw_sha256    TEXT NOT NULL,
    raw           BLOB NOT NULL,
    event         TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    -- set when the publish was confirmed; NULL means "publish again on resend"
    published_at  TEXT,
    PRIMARY KEY (source_key, message_id)
) STRICT;

CREATE TABLE rejected_inputs (
    id           BLOB PRIMARY KEY,
    adapter      TEXT NOT NULL,
    peer         TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    location     TEXT,
    reason       TEXT NOT NULL,
    raw_sha256   TEXT NOT NULL,
    raw          BLOB NOT NULL
) STRICT;

-- ─── Routing and delivery ────────────────────────────────────────────────────────────
CREATE TABLE events (
    id           BLOB PRIMARY KEY,
    event_type   TEXT NOT NULL,
    source       TEXT NOT NULL,
    time         TEXT NOT NULL,
    patient_id   TEXT REFERENCES patients (id),
    body         TEXT NOT NULL,
    routed_at    TEXT NOT NULL
) STRICT;
CREATE INDEX events_patient ON events (patient_id);

CREATE TABLE deliveries (
    id               BLOB PRIMARY KEY,
    event_id         BLOB NOT NULL REFERENCES events (id),
    participant_id   TEXT NOT NULL REFERENCES participants (id),
    endpoint_name    TEXT NOT NULL,
    sequence         INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'delivered', 'dead', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (event_id, participant_id),
    UNIQUE (participant_id, sequence)
) STRICT;

CREATE TABLE delivery_attempts (
    id           INTEGER PRIMARY KEY,
    delivery_id  BLOB NOT NULL REFERENCES deliveries (id),
    attempt      INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    outcome      TEXT NOT NULL
) STRICT;
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

-- ─── Audit ───────────────────────────────────────────────────────────────────────────
-- Append-only and hash-chained exactly as on PostgreSQL (the same `chain_hash`). With
-- one writer, entries are chained inside the transaction that records their decision:
-- no pending table is needed.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    patient_id      TEXT,
    event_id        BLOB,
    participant_id  TEXT,
    detail          TEXT NOT NULL,
    prev_hash       BLOB NOT NULL,
    hash            BLOB NOT NULL
) STRICT;

CREATE TABLE audit_head (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL
) STRICT;
INSERT INTO audit_head (singleton, seq, hash) VALUES (1, 0, zeroblob(32));

-- The log is append-only for the hub itself; a DELETE without WHERE runs the trigger
-- too (SQLite skips its truncate shortcut when a table has triggers).
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
