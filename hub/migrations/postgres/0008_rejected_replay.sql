-- A refused input replayed (fixed, or as kept) through the normal path: when, and the
-- event it became. Replayed once: a second replay of the same row is refused.
ALTER TABLE rejected_inputs ADD COLUMN replayed_at TIMESTAMPTZ;
ALTER TABLE rejected_inputs ADD COLUMN replayed_event UUID;
CREATE INDEX rejected_inputs_received ON rejected_inputs (received_at DESC, id DESC);
