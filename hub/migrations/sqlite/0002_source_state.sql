-- What each source remembers across restarts (how far it has read a folder or a
-- storage tree), a value per key per source name.
CREATE TABLE source_state (
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (source, key)
) STRICT;
