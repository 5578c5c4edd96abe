-- Who holds the writer lock of this database (issue 14): one row, replaced
-- by each process that takes the lock. The lock itself is the OS file lock
-- on `<db>.lock`; this row only names the holder in a refusal.
CREATE TABLE writer (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    pid     INTEGER NOT NULL,
    host    TEXT NOT NULL,
    command TEXT NOT NULL,
    since   TEXT NOT NULL
);
