-- The flow lease's token a run started under. A run is live while its
-- flow's lease is live with that token (the same holder): told apart from a
-- dead replica's run without comparing the replica's clock (its
-- `started_at`) with the database's (the lease's `acquired_at`). NULL for
-- runs stored before this column, which no live replica can be running.
ALTER TABLE runs ADD COLUMN lease_token INTEGER;
