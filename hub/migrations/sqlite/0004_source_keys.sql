-- A key with a facility is a source key: it lets a sender publish as that facility
-- (the FHIR receiver, HTTP uploads) and nothing else; admin keys have none.
ALTER TABLE api_keys ADD COLUMN facility TEXT;
