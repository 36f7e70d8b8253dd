-- A delivery row is updated at least once after it is written (its outcome), and an
-- ingest row once (its publish confirm). Room left on each page and no index on the
-- updated columns let PostgreSQL make those updates in place (HOT), without a new entry
-- in every index of the table: under load the delivery outcome update was the most
-- expensive statement of the hub. Listing deliveries by status now reads the table in
-- id order, which operators do rarely next to the hub's own writes.
DROP INDEX IF EXISTS deliveries_status;
ALTER TABLE deliveries SET (fillfactor = 50);
ALTER TABLE ingests SET (fillfactor = 60);
