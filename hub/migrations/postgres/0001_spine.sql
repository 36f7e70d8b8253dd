-- Renkei spine: registry, events, deliveries, attempts, rejected inputs, audit log.

-- ─── Registry ────────────────────────────────────────────────────────────────────────
CREATE TABLE facilities (
    code        text PRIMARY KEY CHECK (code ~ '^[0-9]{10}$'),
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('hospital', 'clinic', 'visiting_nursing', 'care_management', 'care_facility', 'pharmacy', 'other')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    id             text PRIMARY KEY,
    facility_code  text NOT NULL REFERENCES facilities (code),
    name           text NOT NULL,
    -- last per-participant sequence number handed to a delivery (receivers detect gaps)
    last_sequence  bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE endpoints (
    participant_id  text NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    name            text NOT NULL,
    url             text NOT NULL,
    -- Standard Webhooks secrets (whsec_...); every one signs, so a receiver can rotate.
    secrets         text[] NOT NULL CHECK (cardinality(secrets) >= 1),
    enabled         boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant_id, name)
);

CREATE TABLE subscriptions (
    participant_id     text NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    name               text NOT NULL,
    endpoint_name      text NOT NULL,
    event_types        text[] NOT NULL,
    -- empty: events from any facility
    source_facilities  text[] NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant_id, name),
    FOREIGN KEY (participant_id, endpoint_name) REFERENCES endpoints (participant_id, name) ON DELETE CASCADE
);
CREATE INDEX subscriptions_event_types ON subscriptions USING gin (event_types);

CREATE TABLE patients (
    id          text PRIMARY KEY,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE patient_identifiers (
    system      text NOT NULL,
    value       text NOT NULL,
    patient_id  text NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    PRIMARY KEY (system, value)
);
CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);

CREATE TABLE care_relationships (
    patient_id      text NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    participant_id  text NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
    role            text NOT NULL,
    valid_from      date NOT NULL,
    valid_until     date,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, participant_id)
);

CREATE TABLE consents (
    id            text PRIMARY KEY,
    patient_id    text NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    -- 'blanket': every participating facility except `facilities`;
    -- 'facilities': only the facilities listed.
    scope         text NOT NULL CHECK (scope IN ('blanket', 'facilities')),
    facilities    text[] NOT NULL DEFAULT '{}',
    basis         text NOT NULL CHECK (basis IN ('written', 'oral_recorded')),
    valid_from    timestamptz NOT NULL,
    valid_until   timestamptz,
    withdrawn_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_patient ON consents (patient_id);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    -- SHA-256 of the key; the key itself is shown once and never stored.
    key_sha256  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- ─── Ingest ──────────────────────────────────────────────────────────────────────────
-- One row per accepted source message; (source_key, message_id) dedupes resends.
CREATE TABLE ingests (
    source_key    text NOT NULL,
    message_id    text NOT NULL,
    event_id      uuid NOT NULL UNIQUE,
    event_type    text NOT NULL,
    raw_sha256    text NOT NULL,
    raw           bytea NOT NULL,
    event         jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- set when the broker confirmed the publish; NULL means "publish again on resend"
    published_at  timestamptz,
    PRIMARY KEY (source_key, message_id)
);

-- Inputs the hub will never accept, kept whole so an operator can fix and replay them.
CREATE TABLE rejected_inputs (
    id           uuid PRIMARY KEY,
    adapter      text NOT NULL,
    peer         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    location     text,
    reason       text NOT NULL,
    raw_sha256   text NOT NULL,
    raw          bytea NOT NULL
);

-- ─── Routing and delivery ────────────────────────────────────────────────────────────
CREATE TABLE events (
    id           uuid PRIMARY KEY,
    event_type   text NOT NULL,
    source       text NOT NULL,
    time         timestamptz NOT NULL,
    patient_id   text REFERENCES patients (id),
    body         jsonb NOT NULL,
    routed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_patient ON events (patient_id);

CREATE TABLE deliveries (
    id               uuid PRIMARY KEY,
    event_id         uuid NOT NULL REFERENCES events (id),
    participant_id   text NOT NULL REFERENCES participants (id),
    endpoint_name    text NOT NULL,
    sequence         bigint NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'retrying', 'delivered', 'dead', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, participant_id),
    UNIQUE (participant_id, sequence)
);
CREATE INDEX deliveries_status ON deliveries (status) WHERE status IN ('pending', 'retrying', 'dead');

CREATE TABLE delivery_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES deliveries (id),
    -- attempt number within the current round (a replay starts a new round at 1)
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  integer NOT NULL,
    status_code  integer,
    error        text,
    outcome      text NOT NULL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

-- ─── Audit ───────────────────────────────────────────────────────────────────────────
-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical row text).
-- `seq` has no gaps (assigned under audit_head's row lock), so a removed row shows.
CREATE TABLE audit_log (
    seq             bigint PRIMARY KEY,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    outcome         text NOT NULL,
    patient_id      text,
    event_id        uuid,
    participant_id  text,
    detail          jsonb NOT NULL,
    prev_hash       bytea NOT NULL,
    hash            bytea NOT NULL
);

CREATE TABLE audit_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- The log is append-only for the hub's own role too.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
