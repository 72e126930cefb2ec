-- The chat page's kept sign-ins and the followed news feeds. Portable SQL, as 0001.

-- rag.ui.session: the chat page's sign-ins kept across reloads (SHA-256 of tokens only)
CREATE TABLE IF NOT EXISTS page_sessions (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    account_created DOUBLE PRECISION NOT NULL,
    issued DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    code_sha256 TEXT,
    token_sha256 TEXT UNIQUE
);
-- rag.ingest.feeds: the feeds `rag ingest --watch` and the app follow, their validators
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    added DOUBLE PRECISION NOT NULL,
    etag TEXT,
    last_modified TEXT,
    checked DOUBLE PRECISION,
    status TEXT
);
