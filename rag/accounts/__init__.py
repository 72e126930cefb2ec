"""App state: accounts, API keys, sign-in lockout and saved conversations (SQLite)."""
