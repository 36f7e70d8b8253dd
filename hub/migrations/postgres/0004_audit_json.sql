-- Audit details are written once and read back whole (to hash, verify and show them):
-- `json` only validates the text, where `jsonb` converts it on every insert. Queries
-- such as detail->>'reason' work the same on both.
ALTER TABLE audit_pending ALTER COLUMN detail TYPE json USING detail::json;
ALTER TABLE audit_log ALTER COLUMN detail TYPE json USING detail::json;
