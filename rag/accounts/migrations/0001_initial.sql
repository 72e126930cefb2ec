-- The app database as it was on SQLite alone: accounts, API keys, sign-in failures, saved
-- conversations. Portable SQL (SQLite and PostgreSQL): the column named "user" is quoted
-- (a reserved word in PostgreSQL); times are seconds since the epoch as DOUBLE PRECISION
-- (PostgreSQL's REAL has 24 bits of mantissa: a time today would be off by up to 64 s).

-- rag.accounts.users: users, their API keys (SHA-256 only), failed sign-ins per client
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_sha256 TEXT PRIMARY KEY,
    "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS sign_in_failures (
    "user" TEXT NOT NULL,
    client TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY ("user", client)
);
-- rag.accounts.conversations: saved conversations per user, their messages in order
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    title TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations ("user", updated);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (conversation, position)
);
