"""The small service API that the CLI and the Streamlit app both call.

It owns the expensive objects (embedder, Chroma client, BM25 index) so a long-lived caller
(the app, a benchmark) pays for them once, and it turns every failure a user can cause into
an exception with a message fit to show as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag.answer import (
    DEFAULT_ABSTAIN_THRESHOLD,
    Answer,
    QuestionError,
    check_question,
    extractive_answer,
)
from rag.chat import AnswerStream, llm_answer
from rag.citations import SourceCache
from rag.config import Settings, get_settings
from rag.embeddings import Embedder, make_embedder
from rag.formats import SUPPORTED_LABEL, SUPPORTED_SUFFIXES
from rag.ingest import (
    IngestError,
    IngestReport,
    ProgressFn,
    ingest,
    safe_upload_path,
    sync_lexical,
)
from rag.lexical import LexicalIndex
from rag.llm import History
from rag.retrieve import HybridRetriever, Retrieval
from rag.store import Store, StoreError, open_store

__all__ = ["Answer", "AnswerStream", "CorpusStatus", "QuestionError", "RagService", "StoreError"]


@dataclass
class CorpusStatus:
    """What the sidebar and ``rag status`` show."""

    documents: int
    chunks: int
    embed_model: str
    answer_mode: str


class RagService:
    """Ingest and ask over one corpus (one Chroma collection and its BM25 index)."""

    def __init__(self, settings: Settings | None = None, collection: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.collection = collection or self.settings.collection
        self._lexical: LexicalIndex | None = None
        self._lexical_stamp: float | None = None

    @cached_property
    def embedder(self) -> Embedder:
        return make_embedder(self.settings)

    @cached_property
    def store(self) -> Store:
        return open_store(
            self.settings, self.embedder.model_name, self.embedder.dim, self.collection
        )

    @property
    def lexical_root(self) -> Path:
        return self.settings.data_dir / "lexical" / self.collection

    def ingest(
        self,
        paths: list[Path],
        *,
        rebuild: bool = False,
        prune: bool = False,
        progress: ProgressFn | None = None,
        show_progress: bool = True,
    ) -> IngestReport:
        """Index ``paths`` incrementally (see ``rag.ingest.ingest``)."""
        report = ingest(
            paths,
            self.store,
            self.embedder,
            self.lexical_root,
            self.settings.data_dir / "extracted",
            chunk_size=self.settings.chunk_size,
            chunk_overlap=self.settings.chunk_overlap,
            batch_size=self.settings.embed_batch_size,
            rebuild=rebuild,
            prune=prune,
            progress=progress,
            show_progress=show_progress,
        )
        self._lexical = None
        return report

    def lexical(self) -> LexicalIndex:
        """The BM25 index, reloaded when another process has published a newer one."""
        pointer = self.lexical_root / "CURRENT"
        stamp = pointer.stat().st_mtime if pointer.exists() else None
        if self._lexical is None or stamp != self._lexical_stamp:
            self._lexical = sync_lexical(self.store, self.lexical_root)
            self._lexical_stamp = pointer.stat().st_mtime if pointer.exists() else None
        return self._lexical

    def retriever(self, top_k: int | None = None) -> HybridRetriever:
        return HybridRetriever(
            self.store, self.embedder, self.lexical(), top_k or self.settings.top_k
        )

    def ensure_ready(self) -> None:
        """Fail with a useful message when there is nothing (or the wrong thing) to ask."""
        if self.store.count() == 0:
            raise StoreError("The index is empty: run `rag ingest` first.")
        self.store.check_embedder()

    def ask(self, question: str, top_k: int | None = None, history: History = ()) -> Answer:
        """Answer from the indexed documents, with verified citations, or abstain."""
        return self.ask_stream(question, top_k, history).finalize()

    def ask_stream(
        self, question: str, top_k: int | None = None, history: History = ()
    ) -> AnswerStream:
        """The answer as it is written; ``finalize()`` then gives it with checked citations.

        With an LLM configured, a follow-up is first rewritten into a standalone question
        from ``history``; extractive answers are single-turn and ignore it.
        """
        question = check_question(question)
        self.ensure_ready()
        if not self.settings.llm_enabled:
            return AnswerStream.of(self._retrieve(question, top_k)[1])
        return llm_answer(self.settings, question, history, lambda q: self._retrieve(q, top_k))

    def _retrieve(self, question: str, top_k: int | None) -> tuple[Retrieval, Answer]:
        """What ``question`` retrieves and the extractive answer over it.

        The extractive answer doubles as the LLM's abstention gate (same evidence score,
        same threshold) and as its fallback when the LLM fails.
        """
        retriever = self.retriever(top_k)
        retrieval = retriever.search(question)
        threshold = self.settings.abstain_threshold or DEFAULT_ABSTAIN_THRESHOLD
        return retrieval, extractive_answer(question, retrieval, retriever.lexical.idf, threshold)

    @property
    def upload_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def add_uploads(
        self, uploads: list[tuple[str, bytes]], progress: ProgressFn | None = None
    ) -> IngestReport:
        """Save uploaded files under the upload folder and index them at once.

        A file that cannot be saved or parsed is reported by name; the others are indexed.
        """
        saved: list[Path] = []
        failed: list[tuple[str, str]] = []
        for name, data in uploads:
            try:
                path = safe_upload_path(self.upload_dir, name)
                if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                    raise IngestError(
                        f"{name}: unsupported file type (supported: {SUPPORTED_LABEL})"
                    )
                self.upload_dir.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                saved.append(path)
            except IngestError as exc:
                failed.append((name, str(exc).removeprefix(f"{name}: ")))
        report = (
            self.ingest(saved, progress=progress, show_progress=False)
            if saved
            else (IngestReport())
        )
        report.failed = failed + report.failed
        return report

    @staticmethod
    def document_text(ref: str) -> str | None:
        """The text citation offsets point into: a citation's ``extracted`` file, or its
        ``source`` for plain text and Markdown (None if it is gone)."""
        return SourceCache().text(ref)

    def status(self) -> CorpusStatus:
        files = self.store.file_records()
        mode = f"llm:{self.settings.llm_model}" if self.settings.llm_enabled else "extractive"
        return CorpusStatus(len(files), self.store.count(), self.embedder.model_name, mode)
