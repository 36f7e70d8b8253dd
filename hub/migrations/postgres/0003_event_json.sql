-- Events are stored and read back whole, never queried inside: `json` keeps the text as
-- written (validated, not re-encoded), which costs PostgreSQL far less than `jsonb` on
-- every insert and every read of a delivery's body.
ALTER TABLE ingests ALTER COLUMN event TYPE json USING event::json;
ALTER TABLE events ALTER COLUMN body TYPE json USING body::json;
