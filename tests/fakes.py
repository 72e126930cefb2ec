"""A fake embedder with predictable vectors, for unit tests that must run in milliseconds.

In the manner of simonw/llm's fake model: each word maps to a fixed pseudo-random unit
vector (seeded by the word), a text's vector is the normalised sum of its words', so texts
that share words are similar and nothing else is. Its token states are the words' vectors
with their character spans, so late chunking can be checked exactly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from rag.embedding.onnx_e5 import TokenStates

_WORD = re.compile(r"\w+")


class FakeEmbedder:
    model_id = "fake/bag-of-words"
    dim = 64

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # (method, number of texts), for assertions

    def word_vector(self, word: str) -> np.ndarray:
        seed = int(hashlib.sha256(word.lower().encode()).hexdigest()[:8], 16)
        vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vec / np.linalg.norm(vec)

    def states(self, text: str) -> TokenStates:
        spans = [m.span() for m in _WORD.finditer(text)] or [(0, 0)]
        rows = np.stack([self.word_vector(text[a:b] or "∅") for a, b in spans])
        return TokenStates(rows, spans, _unit(rows.sum(axis=0)))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(("queries", len(texts)))
        return self._matrix(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(("passages", len(texts)))
        return self._matrix(texts)

    def passage_states(self, texts: Sequence[str]) -> list[TokenStates]:
        self.calls.append(("states", len(texts)))
        return [self.states(text) for text in texts]

    def _matrix(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.states(text).pooled for text in texts]).reshape(len(texts), self.dim)


def _unit(vec: np.ndarray) -> np.ndarray:
    return vec / max(float(np.linalg.norm(vec)), 1e-12)
