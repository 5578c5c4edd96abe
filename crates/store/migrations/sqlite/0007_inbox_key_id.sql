-- The id (never the value) of the inbox API key that authenticated each
-- message: which sender's key was used during a rotation window.
ALTER TABLE inbox ADD COLUMN api_key_id TEXT;
