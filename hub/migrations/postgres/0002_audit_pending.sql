-- Audit entries are written by the transaction that makes the decision they record, into
-- audit_pending, without taking any lock that other transactions wait on. A sealer (every
-- `renkei up` process runs one; `renkei audit verify` runs one first) moves them into the
-- hash chain in batches, in one transaction under audit_head's row lock, so the chain's
-- `seq` stays gapless and the hot path never serialises on the chain head.
CREATE TABLE audit_pending (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    outcome         text NOT NULL,
    patient_id      text,
    event_id        uuid,
    participant_id  text,
    detail          jsonb NOT NULL
);
