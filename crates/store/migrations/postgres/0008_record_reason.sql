-- The reason of a record not delivered, as the run report gives it (host
-- text, and job text already reduced to codes with record values redacted:
-- the same text the dead letter keeps), so run history shows why without
-- waiting for the dead letter.
ALTER TABLE record_outcomes ADD COLUMN reason TEXT;
