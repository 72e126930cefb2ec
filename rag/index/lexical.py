"""The lexical (BM25) arm: accent-folded, stemmed French/English tokens in a bm25s index.

The index lives on disk beside Chroma and records the chunk-state token it was built at
(``Store.change_stamp``, renewed by every ingest that changes chunks, before and after its
writes). Each build goes to a fresh directory and a one-line ``CURRENT`` pointer is swapped
atomically, so a reader never sees a half-written index and a killed ingest leaves the
previous one intact; an index whose token is not the store's current one is rebuilt from
Chroma (after a killed ingest, the token renewed before its writes matches no index).
It also keeps each chunk's filter keys (``MASK_KEYS``: its workspace, source and date), so
a scoped or filtered search masks the other chunks out of the scores before taking its top
k (``search``'s ``admits``), never after.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bm25s
import numpy as np

from rag.config import Settings
from rag.datadir import file_lock, writer_active
from rag.index.records import WORKSPACE_KEY
from rag.text import tokenize

if TYPE_CHECKING:
    from rag.index.store import Store


@dataclass
class LexicalHits:
    """BM25 results plus how much of the query the corpus vocabulary covers."""

    ids: list[str]
    scores: list[float]
    coverage: float


# Chunk metadata the index keeps per chunk, so a workspace scope or a user's filter masks
# chunks before BM25's top-k (``Scope.admits``, ``Selection.admits``) without asking Chroma.
MASK_KEYS = ("source", "date_int", WORKSPACE_KEY)


class LexicalIndex:
    """A bm25s index over chunk texts, addressed by chunk id, with each chunk's filter keys."""

    def __init__(
        self,
        bm25: bm25s.BM25 | None,
        ids: list[str],
        token: str,
        metas: list[dict[str, Any]] | None = None,
    ) -> None:
        self.bm25 = bm25
        self.ids = ids
        self.metas = metas if metas is not None else [{} for _ in ids]
        self.token = token  # the chunk state it covers (``Store.change_stamp``)
        self.vocab: dict[str, int] = bm25.vocab_dict if bm25 is not None else {}

    @classmethod
    def build(
        cls,
        ids: list[str],
        texts: list[str],
        token: str,
        metas: list[dict[str, Any]] | None = None,
    ) -> LexicalIndex:
        if not ids:
            return cls(None, [], token)
        bm25 = bm25s.BM25()
        bm25.index([tokenize(t) or ["∅"] for t in texts], show_progress=False)
        return cls(bm25, list(ids), token, metas)

    @cached_property
    def idf(self) -> dict[str, float]:
        """BM25 idf of every vocabulary term (floored, so common words still count a little)."""
        if self.bm25 is None:
            return {}
        n_docs = len(self.ids)
        indptr = self.bm25.scores["indptr"]
        doc_freqs = indptr[1:] - indptr[:-1]
        idf = np.log1p((n_docs - doc_freqs + 0.5) / (doc_freqs + 0.5))
        # bm25s keeps a placeholder token past the last column; it has no idf.
        return {tok: max(0.05, float(idf[i])) for tok, i in self.vocab.items() if i < idf.size}

    @cached_property
    def top_idf(self) -> float:
        """The rarest term's idf (1 for an empty index): the answer decision weighs question
        words relative to it, once per index rather than once per question."""
        return max(self.idf.values(), default=1.0)

    def search(
        self, query: str, k: int, admits: Callable[[dict[str, Any]], bool] | None = None
    ) -> LexicalHits:
        """The ``k`` best chunks for ``query``; with ``admits``, only chunks whose metadata it
        admits, masked before the top-k so ``k`` are found when they exist."""
        tokens = tokenize(query)
        known = [t for t in tokens if t in self.vocab]
        coverage = len(known) / len(tokens) if tokens else 0.0
        if not known or self.bm25 is None:
            return LexicalHits([], [], coverage)
        k = min(k, len(self.ids))
        mask = None
        if admits is not None:
            mask = np.fromiter((admits(m) for m in self.metas), np.float32, len(self.metas))
        docs, scores = self.bm25.retrieve(
            [known], k=k, show_progress=False, n_threads=1, weight_mask=mask
        )
        pairs = [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]
        return LexicalHits([self.ids[d] for d, _ in pairs], [s for _, s in pairs], coverage)

    def save(self, root: Path) -> None:
        """Write into a new directory, then atomically repoint ``CURRENT`` at it."""
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"idx-{self.token[:16]}-{os.getpid()}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        if self.bm25 is not None:
            self.bm25.save(str(target), show_progress=False)
        listing = {"token": self.token, "ids": self.ids, "metas": self.metas}
        (target / "ids.json").write_text(json.dumps(listing))
        tmp = root / f"CURRENT.{os.getpid()}"
        tmp.write_text(target.name)
        os.replace(tmp, root / "CURRENT")
        for old in root.glob("idx-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, root: Path) -> LexicalIndex | None:
        """The saved index, or None when there is none or it cannot be read."""
        try:
            target = root / (root / "CURRENT").read_text().strip()
            meta = json.loads((target / "ids.json").read_text())
            # An index written before tokens (or filter keys) existed is rebuilt.
            token, metas = meta["token"], meta["metas"]
            bm25 = bm25s.BM25.load(str(target), show_progress=False) if meta["ids"] else None
        except (OSError, ValueError, KeyError):
            return None
        return cls(bm25, meta["ids"], token, metas)


def sync_lexical(
    store: Store, root: Path, *, force: bool = False, stale_ok: bool = False
) -> LexicalIndex:
    """Load the BM25 index, rebuilding it from Chroma when it does not match the chunks.

    Builds and loads of one index are serialised (threads and processes), so concurrent
    callers never write the same directory. ``stale_ok`` (a reader while an ingest is
    running) takes the published index as it is; that ingest publishes a matching one.
    """
    with file_lock(root.parent / f"{root.name}.lock"):
        current = None if force else LexicalIndex.load(root)
        if current is not None and stale_ok:
            return current
        # Read before the chunks: a change made meanwhile leaves the index labelled older.
        token = store.change_stamp() or ""
        if current is not None and current.token == token:
            return current
        chunks = store.all_chunks()
        texts = [f"{c.meta.get('title', '')}\n{c.text}" for c in chunks]
        metas = [{key: c.meta[key] for key in MASK_KEYS if key in c.meta} for c in chunks]
        index = LexicalIndex.build([c.id for c in chunks], texts, token, metas)
        index.save(root)
        return index


class LexicalCache:
    """The BM25 index one service reads, reloaded when the chunks have changed.

    Every reader, in this process or another, with an embedded store or a Chroma server,
    compares one token: the store's change stamp against the one its index was built at.
    While an ingest is running, the index in hand (else the last published one) is used as
    it is; that ingest publishes a matching one when it ends.
    """

    def __init__(self, settings: Settings, collection: str) -> None:
        self.settings = settings
        self.root = settings.data_dir / "lexical" / collection
        self._index: LexicalIndex | None = None

    def current(self, store: Store) -> LexicalIndex:
        """The index matching ``store``'s chunks (call under the store's read lock)."""
        token = store.change_stamp() or ""
        if self._index is not None and self._index.token == token:
            return self._index
        ingesting = writer_active(self.settings)
        if self._index is None or not ingesting:
            self._index = sync_lexical(store, self.root, stale_ok=ingesting)
        return self._index
