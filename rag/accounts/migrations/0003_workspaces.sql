-- Workspaces: named sets of documents (the default one is not stored), their members with a
-- role each, the API keys limited to one workspace, and the workspace a conversation
-- belongs to (the default one for conversations saved before). Portable SQL, as 0001.

-- rag.accounts.workspaces
CREATE TABLE IF NOT EXISTS workspaces (
    name TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS workspace_members (
    workspace TEXT NOT NULL REFERENCES workspaces(name) ON DELETE CASCADE,
    username TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (workspace, username)
);
CREATE TABLE IF NOT EXISTS key_workspaces (
    key_sha256 TEXT PRIMARY KEY REFERENCES api_keys(key_sha256) ON DELETE CASCADE,
    workspace TEXT NOT NULL
);
-- rag.accounts.conversations
ALTER TABLE conversations ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
