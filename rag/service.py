"""The small service API that the CLI and the Streamlit app both call.

It owns the expensive objects (embedder, Chroma client, BM25 index) so a long-lived caller
(the app, a benchmark) pays for them once, and it turns every failure a user can cause into
an exception with a message fit to show as is.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag.answering.decision import Decision, Judge, Judgement, Verdict, WordVectors
from rag.answering.extractive import (
    Answer,
    AnswerStream,
    QuestionError,
    check_question,
    extractive_answer,
)
from rag.answering.generate import Generator, fallback
from rag.answering.llm import History, LLMError
from rag.answering.verifier import Verifier, default_verifier
from rag.config import Settings, get_settings
from rag.datadir import StoreError, write_lock
from rag.documents.citations import Citation, SourceCache
from rag.embedding.embedders import Embedder, EmbeddingError, make_embedder
from rag.index.lexical import LexicalCache, LexicalIndex
from rag.index.store import FileRecord, Store, open_store
from rag.ingest.pipeline import IngestReport, ProgressFn, ingest, save_uploads
from rag.retrieval.hybrid import HybridRetriever, Retrieval

__all__ = [
    "Answer",
    "AnswerStream",
    "CorpusStatus",
    "EmbeddingError",
    "QuestionError",
    "RagService",
    "StoreError",
    "check_question",
    "shared_service",
]


@dataclass(frozen=True)
class Evidence:
    """What a question retrieves, how sure the judge is that it answers, and the extractive
    answer over it.

    The extractive answer's verdict also says whether an LLM is asked, and the answer itself
    is the LLM's fallback when the call fails.
    """

    retrieval: Retrieval
    judgement: Judgement
    extractive: Answer
    verdict: Verdict


@dataclass
class CorpusStatus:
    """What the sidebar and ``rag status`` show."""

    documents: int
    chunks: int
    embed_model: str
    answer_mode: str


class RagService:
    """Ingest and ask over one corpus (one Chroma collection and its BM25 index)."""

    def __init__(
        self,
        settings: Settings | None = None,
        collection: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.collection = collection or self.settings.collection
        if embedder is not None:  # tests pass a fake one; otherwise loaded on first use
            self.embedder = embedder
        self._lexical = LexicalCache(self.settings, self.collection)
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._decision: tuple[Settings, Decision] | None = None

    @cached_property
    def embedder(self) -> Embedder:
        return make_embedder(self.settings)

    @property
    def store(self) -> Store:
        """The Chroma collections (opened on first use, reopened when another process wrote)."""
        if self._store is None:
            self._open_store()
        return self._store

    def _open_store(self, *, refresh: bool = False) -> Store:
        with self._store_lock:
            if self._store is None or (refresh and self._store.is_stale()):
                self._store = open_store(
                    self.settings, self.embedder.model_id, self.embedder.dim, self.collection
                )
            return self._store

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Store]:
        """Read under the embedded store's shared lock, from a System that saw every write.

        A process that opened Chroma before another process wrote is out of date (see
        ``rag.datadir.LocalSync``): it reopens Chroma first. The BM25 index follows the
        chunks' freshness token (``rag.index.lexical.LexicalCache``).
        """
        store = self.store
        with store.reading():
            if store.is_stale():
                store = self._open_store(refresh=True)
            yield store

    def ensure_data_dir(self) -> None:
        """Open the store, which checks a data dir or marks a new one as ours.

        Anything else written into a new data dir first would make it look foreign.
        """
        if not self.settings.chroma_url:
            self.store  # noqa: B018 - opening is the point

    def ingest(
        self,
        paths: list[Path],
        *,
        rebuild: bool = False,
        prune: bool = False,
        progress: ProgressFn | None = None,
        show_progress: bool = True,
    ) -> IngestReport:
        """Index ``paths`` incrementally (see ``rag.ingest.pipeline.ingest``).

        One ingest at a time writes to an embedded store (``write_lock``); others wait.
        """
        self.ensure_data_dir()  # before the lock file is created in it
        with write_lock(self.settings):
            with self._reading():
                pass  # reopens Chroma if another process wrote: never write from a stale view
            report = ingest(
                paths,
                self.store,
                self.embedder,
                self._lexical.root,
                self.settings.data_dir / "extracted",
                chunk_size=self.settings.chunk_size,
                chunk_overlap=self.settings.chunk_overlap,
                batch_size=self.settings.embed_batch_size,
                late=self.settings.sentence_vectors == "late",
                rebuild=rebuild,
                prune=prune,
                progress=progress,
                show_progress=show_progress,
                max_file_mb=self.settings.max_file_mb,
            )
        return report

    def indexed_files(self) -> dict[str, FileRecord]:
        """The manifest: every fully indexed file by source path (the watcher diffs it)."""
        with self._reading() as store:
            return store.file_records()

    def lexical(self) -> LexicalIndex:
        """The BM25 index matching the chunks (see ``rag.index.lexical.LexicalCache``)."""
        with self._reading() as store:
            return self._lexical.current(store)

    def retriever(self, top_k: int | None = None) -> HybridRetriever:
        return HybridRetriever(
            self.store, self.embedder, self.lexical(), top_k or self.settings.top_k
        )

    def ensure_ready(self) -> None:
        """Fail with a useful message when there is nothing (or the wrong thing) to ask."""
        with self._reading() as store:
            if store.count() == 0:
                raise StoreError("The index is empty: run `rag ingest` first.")
            store.check_embedder()

    def ask(self, question: str, top_k: int | None = None, history: History = ()) -> Answer:
        """Answer from the indexed documents, with verified citations, or abstain."""
        return self.ask_stream(question, top_k, history).finalize()

    def ask_stream(
        self, question: str, top_k: int | None = None, history: History = ()
    ) -> AnswerStream:
        """The answer as it is written; ``finalize()`` then gives it with checked citations.

        The one path of a question: check it, (with an LLM) rewrite a follow-up into a
        standalone question from ``history``, retrieve, decide whether the documents answer
        it, then answer (extractive, or streamed by the LLM), the citations verified when
        the answer is finalized. Extractive answers are single-turn and ignore ``history``.
        With an LLM, only a question with nothing relevant (confidence below the gate) is
        refused without asking; otherwise the model reads the passages and decides, since
        it can answer what the extractive quotes could not (it may still refuse).
        """
        question = check_question(question)
        self.ensure_ready()
        if not self.settings.llm_enabled:
            return AnswerStream.of(self.evidence(question, top_k).extractive)
        generator = Generator(self.settings)
        try:
            standalone = generator.standalone(question, history)
        except LLMError as error:
            return AnswerStream.of(fallback(self.evidence(question, top_k).extractive, error))
        found = self.evidence(standalone, top_k)
        if found.verdict is Verdict.NOTHING:
            return AnswerStream.of(found.extractive)

        def check(citations: list[Citation]) -> list[Citation]:
            return self.decision.supported(self.verifier, standalone, citations, found.retrieval)

        return generator.stream(standalone, found.retrieval, found.extractive, check)

    @cached_property
    def word_vectors(self) -> WordVectors:
        """Single-word vectors for term alignment, cached for the life of the service."""
        return WordVectors(self.embedder)

    @cached_property
    def verifier(self) -> Verifier:
        """The answer verifier (one per process, ``default_verifier``)."""
        return default_verifier()

    @property
    def decision(self) -> Decision:
        """The operating points, resolved once per settings object from them and the fitted
        defaults (``Decision.resolve``)."""
        if self._decision is None or self._decision[0] is not self.settings:
            self._decision = (self.settings, Decision.resolve(self.settings))
        return self._decision[1]

    def evidence(
        self, question: str, top_k: int | None = None, exclude: Collection[str] = ()
    ) -> Evidence:
        """What ``question`` retrieves (never the chunk ids in ``exclude``), the judgement
        over it and the extractive answer."""
        with self._reading():
            retriever = self.retriever(top_k)
            retrieval = retriever.search(question, exclude=exclude)
        decision = self.decision
        judge = Judge(retriever.lexical, self.word_vectors, self.verifier, score=decision.score)
        judgement = judge.judge(question, retrieval)
        answer = extractive_answer(retrieval, judgement, decision)
        return Evidence(retrieval, judgement, answer, decision.verdict(answer.confidence))

    @property
    def upload_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def add_uploads(
        self, uploads: list[tuple[str, bytes]], progress: ProgressFn | None = None
    ) -> IngestReport:
        """Save uploaded files under the upload folder and index them at once.

        A file that cannot be saved or parsed is reported by name; the others are indexed.
        """
        self.ensure_data_dir()
        saved, failed = save_uploads(self.upload_dir, uploads, self.settings.max_file_mb)
        report = IngestReport()
        if saved:
            report = self.ingest(saved, progress=progress, show_progress=False)
        report.failed = failed + report.failed
        return report

    @staticmethod
    def document_text(ref: str) -> str | None:
        """The text citation offsets point into: a citation's ``extracted`` file, or its
        ``source`` for plain text and Markdown (None if it is gone)."""
        return SourceCache().text(ref)

    def document_refs(self) -> list[str]:
        """Every text a citation of this index can point into, and nothing else.

        A plain text or Markdown file is its own text; a PDF or HTML file's texts are its
        extracted parts, stored under a folder named after the file's hash. The HTTP API
        serves only these, so a document id can never be made to read another file.
        """
        with self._reading() as store:
            records = store.file_records().values()
        extracted = self.settings.data_dir / "extracted"
        refs = []
        for rec in records:
            parts = sorted((extracted / rec.sha256[:24]).glob("*.txt"))
            refs += [str(p) for p in parts] or [rec.source]
        return refs

    def warm_up(self) -> None:
        """Load what the first question needs (model, Chroma segments, BM25 index).

        Called ahead of time by the app's server. It retrieves once and never calls an LLM;
        a corpus not indexed yet is left alone.
        """
        with contextlib.suppress(StoreError):
            self.ensure_ready()
            self.evidence("warm-up", None)

    def status(self) -> CorpusStatus:
        with self._reading() as store:
            files, chunks = store.file_records(), store.count()
        mode = f"llm:{self.settings.llm_model}" if self.settings.llm_enabled else "extractive"
        return CorpusStatus(len(files), chunks, self.embedder.model_id, mode)


_shared: tuple[Settings, RagService] | None = None
_shared_lock = threading.Lock()


def shared_service(settings: Settings) -> RagService:
    """The process's one service for ``settings`` (a new one when given other settings).

    The app's server warms this instance up before the first page load, so the page finds
    the model loaded, Chroma open and the BM25 index read.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] is not settings:
            _shared = (settings, RagService(settings))
        return _shared[1]
