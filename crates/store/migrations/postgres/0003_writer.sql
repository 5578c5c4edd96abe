-- Who last took the writer lease of this database (issue 14). On SQLite the
-- lease is an OS lock and this row names its holder in a refusal; on
-- PostgreSQL replicas share the database (issue 18), so the lease excludes
-- nobody and the row is informational: the last process that started.
CREATE TABLE writer (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    pid     BIGINT NOT NULL,
    host    TEXT NOT NULL,
    command TEXT NOT NULL,
    since   TEXT NOT NULL
);
