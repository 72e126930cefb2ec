"""The small service API that the CLI and the Streamlit app both call.

It owns the expensive objects (embedder, Chroma client, BM25 index) so a long-lived caller
(the app, a benchmark) pays for them once, and it turns every failure a user can cause into
an exception with a message fit to show as is.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag.answering.decision import Judge, Judgement, WordVectors, default_model
from rag.answering.extractive import (
    MAX_SENTENCES,
    Answer,
    AnswerStream,
    QuestionError,
    check_question,
    extractive_answer,
)
from rag.answering.generate import Generator, fallback
from rag.answering.llm import History, LLMError
from rag.config import Settings, get_settings
from rag.datadir import StoreError, check_data_dir, write_lock
from rag.documents.citations import Citation, SourceCache, indexed_text, stored_text
from rag.embedding.embedders import Embedder, make_embedder
from rag.index.lexical import LexicalCache, LexicalIndex
from rag.index.records import FileRecord, document_refs
from rag.index.store import Store, open_store
from rag.ingest.pipeline import IngestReport, ProgressFn, ingest, ingest_options
from rag.ingest.uploads import ingest_uploads
from rag.retrieval.hybrid import HybridRetriever, Retrieval

# Re-exported: the page and the HTTP API take the answer types and question errors from here.
__all__ = ["Answer", "AnswerStream", "QuestionError", "StoreError", "check_question"]


@dataclass(frozen=True)
class Evidence:
    """What a question retrieves, how sure the judge is that it answers, and the extractive
    answer over it.

    The extractive answer's confidence is also the LLM's gate, and the answer itself the
    LLM's fallback when the call fails.
    """

    retrieval: Retrieval
    judgement: Judgement
    extractive: Answer
    gate: float  # below this confidence nothing relevant was found: no LLM is asked


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
        if self.settings.chroma_url:
            check_data_dir(self.settings.data_dir)
        else:
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
            return ingest(
                paths,
                self.store,
                self.embedder,
                self._lexical.root,
                self.settings.data_dir / "extracted",
                **ingest_options(self.settings),
                rebuild=rebuild,
                prune=prune,
                progress=progress,
                show_progress=show_progress,
            )

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
        confidence = found.extractive.confidence
        if confidence is None or confidence < found.gate:
            return AnswerStream.of(found.extractive)
        return generator.stream(standalone, found.retrieval, found.extractive)

    @cached_property
    def word_vectors(self) -> WordVectors:
        """Single-word vectors for term alignment, cached for the life of the service."""
        return WordVectors(self.embedder)

    def evidence(
        self, question: str, top_k: int | None = None, exclude: Collection[str] = ()
    ) -> Evidence:
        """What ``question`` retrieves (never the chunk ids in ``exclude``), the judgement
        over it and the extractive answer."""
        with self._reading():
            retriever = self.retriever(top_k)
            retrieval = retriever.search(question, exclude=exclude)
        judgement = Judge(retriever.lexical, self.word_vectors).judge(question, retrieval)
        judge_model = default_model()
        threshold = self.settings.abstain_threshold or judge_model.threshold
        gate = self.settings.llm_gate or judge_model.gate
        answer = extractive_answer(retrieval, judgement, threshold, gate)
        return Evidence(retrieval, judgement, answer, gate)

    def answer_threshold(self) -> float:
        """The confidence from which a question is answered (``RAG_ABSTAIN_THRESHOLD``, else
        the calibrated one): the page says each confidence in words against it."""
        return self.settings.abstain_threshold or default_model().threshold

    def leads(self, question: str, top_k: int | None = None) -> list[Citation]:
        """For a refusal without closest passages: up to three retrieved sentences that share
        a word with the question, verified, to be shown as leads, never as an answer.

        Below the gate the judge found nothing that answers; yet a refused "How many
        Vietnamese workers are in Kursk?" still has the article's sentences on Kursk.
        """
        found = self.evidence(check_question(question), top_k)
        related = [c for c in found.judgement.ranked if c.share > 0][:MAX_SENTENCES]
        titles = {n.node.node_id: n.node.metadata.get("title", "") for n in found.retrieval.nodes}
        cache, leads = SourceCache(), []
        for item in related:
            title = titles.get(item.sentence.chunk_id, "")
            cite = cache.verify_span(len(leads) + 1, item.sentence.span(), title)
            if cite is not None:
                leads.append(cite)
        return leads

    @property
    def upload_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def add_uploads(
        self, uploads: list[tuple[str, bytes]], progress: ProgressFn | None = None
    ) -> IngestReport:
        """Save uploaded files under the upload folder and index them at once (a file that
        cannot be saved or parsed is reported by name; ``rag.ingest.uploads.ingest_uploads``)."""
        self.ensure_data_dir()
        return ingest_uploads(
            self.upload_dir,
            uploads,
            self.settings.max_file_mb,
            lambda saved: self.ingest(saved, progress=progress, show_progress=False),
        )

    def document_text(self, ref: str) -> str | None:
        """The indexed text citation offsets point into: a citation's ``extracted`` file, or
        its ``source`` for plain text and Markdown.

        None when ``ref`` is neither a text this index stored nor an indexed file whose
        bytes still hash as recorded: the API and the page's viewer show what was indexed,
        never what a path points to now (``rag.documents.citations.indexed_text``).
        """
        path = Path(ref)
        folder = path.parent
        if folder.parent == self.settings.data_dir / "extracted":  # <hash>/<part>.txt
            hashed = re.fullmatch("[0-9a-f]{24}", folder.name) and ".." not in path.parts
            return stored_text(path) if hashed else None
        with self._reading() as store:
            record = store.file_record(ref)
        return indexed_text(path, record.sha256) if record else None

    def document_refs(self) -> list[str]:
        """Every text a citation of this index can point into, and nothing else.

        A plain text or Markdown file is its own text; a PDF or HTML file's texts are its
        extracted parts, stored under a folder named after the file's hash. The HTTP API
        serves only these, so a document id can never be made to read another file.
        """
        with self._reading() as store:
            records = store.file_records().values()
        return document_refs(records, self.settings.data_dir / "extracted")

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
