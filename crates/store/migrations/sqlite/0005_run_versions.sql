-- The versions a run used: the SHA-256 of the job component and the content
-- hash of the mapping folder (NULL when the run took no job instance, and for
-- runs recorded before this migration).
ALTER TABLE runs ADD COLUMN job_hash TEXT;
ALTER TABLE runs ADD COLUMN mappings_hash TEXT;
