-- What each source remembers across restarts (how far it has read a folder or a
-- storage tree), a value per key per source name.
CREATE TABLE source_state (
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BYTEA NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, key)
);
