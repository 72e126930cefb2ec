"""The small service API that the CLI and the Streamlit app both call.

It owns the expensive objects (embedder, Chroma client, BM25 index) so a long-lived caller
(the app, a benchmark) pays for them once, and it turns every failure a user can cause into
an exception with a message fit to show as is.

Workspaces: every read takes an optional ``Scope`` (``rag.retrieval.scope``; None reads
every workspace, for evaluation and benchmarks), built by ``scope`` from the workspaces the
caller may read; the page, the CLI and the API never read without one.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.accounts.workspaces import Workspaces
from rag.answering.decision import Decision, Judge, Verdict, WordVectors
from rag.answering.extractive import (
    Answer,
    AnswerStream,
    Evidence,
    QuestionError,
    check_question,
    extractive_answer,
    leads,
)
from rag.answering.generate import Generator, fallback
from rag.answering.llm import History, LLMError
from rag.answering.verifier import default_verifier
from rag.config import DEFAULT_WORKSPACE, Settings, get_settings
from rag.datadir import StoreError, check_data_dir, write_lock
from rag.documents.citations import Citation, document_text, public_json
from rag.embedding.embedders import Embedder, make_embedder
from rag.errors import RagError
from rag.index.lexical import LexicalCache, LexicalIndex, sync_lexical
from rag.index.records import FileRecord, document_id, document_refs
from rag.index.store import Store, open_store
from rag.ingest.pipeline import IngestReport, ProgressFn, ingest, ingest_options
from rag.ingest.uploads import ingest_uploads
from rag.retrieval.filters import Filters, Selection, names_document
from rag.retrieval.hybrid import HybridRetriever
from rag.retrieval.scope import Scope, where_of

# Re-exported: the page and the HTTP API take the answer types and question errors from here.
__all__ = ["Answer", "AnswerStream", "QuestionError", "StoreError", "check_question"]


class DocumentError(RagError):
    """A document that cannot be found or removed; the message says which and why."""


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
        # Every score's signals in each judgement, not only the deciding score's: what the
        # benchmarks collect to fit and compare the decisions (slower: docs/verifier.md).
        self.every_feature = False

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
        added_by: str = "",
        metadata: dict[str, dict[str, Any]] | None = None,
        roots: Sequence[Path] = (),
        workspace: str = DEFAULT_WORKSPACE,
    ) -> IngestReport:
        """Index ``paths`` incrementally into ``workspace`` (``rag.ingest.pipeline.ingest``),
        as uploaded by ``added_by`` when they are uploads; a file's path is shown relative to
        the folder among ``paths``, then ``roots``, then the uploads folder, that holds it.

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
                added_by=added_by,
                metadata=metadata,
                roots=[*roots, self.upload_dir],
                workspace=workspace,
            )

    def indexed_files(self, scope: Scope | None = None) -> dict[str, FileRecord]:
        """The manifest: every fully indexed file (in ``scope``) by source path (the
        watcher diffs it)."""
        with self._reading() as store:
            return store.file_records(where_of(scope))

    def scope(self, readable: Collection[str]) -> Scope:
        """The scope reading the workspaces ``readable`` (``rag.accounts.workspaces``)."""
        return Scope.of(set(readable), set(Workspaces(self.settings).names()))

    def forget_workspace(self, name: str) -> int:
        """Remove every document of workspace ``name`` from the index; how many there were
        (``rag workspace remove`` calls it before removing the workspace itself)."""
        self.ensure_data_dir()
        with write_lock(self.settings):
            with self._reading() as store:
                sources = list(store.file_records(Scope.of({name}, set()).where))
            if sources:
                store.renew_stamp()
                store.forget_files(sources)
                store.renew_stamp()
        return len(sources)

    def documents(self, scope: Scope | None = None) -> list[FileRecord]:
        """Every indexed document (in ``scope``), newest first (by its own date, then title)."""
        records = sorted(
            self.indexed_files(scope).values(), key=lambda r: (r.title.lower(), r.source)
        )
        return sorted(records, key=lambda r: r.date, reverse=True)

    def find_document(self, ref: str, scope: Scope | None = None) -> FileRecord:
        """The indexed document ``ref`` names: its id, its path, or the id of one of its
        texts (``GET /v1/documents/{id}``); ``DocumentError`` when none or several do."""
        extracted = self.settings.data_dir / "extracted"
        records = self.indexed_files(scope).values()
        found = [r for r in records if ref in (r.id, r.source)] or [
            r for r in records if ref in map(document_id, document_refs([r], extracted))
        ]
        found = found or [r for r in records if names_document(r, ref)]
        if len(found) != 1:
            many = f"{len(found)} documents match" if found else "no indexed document matches"
            raise DocumentError(f"{many} {ref!r}; see `rag documents list`")
        return found[0]

    def remove_document(
        self,
        ref: str,
        scope: Scope | None = None,
        check: Callable[[FileRecord], object] | None = None,
    ) -> FileRecord:
        """Take the document ``ref`` names out of the index: its chunks, sentences and BM25
        entries, its extracted text and, for an upload, its file. A file left in an indexed
        folder comes back at that folder's next ingest; a removed upload does not.
        ``check`` sees the document found before anything is removed, and refuses by
        raising (the API: whether the caller edits its workspace)."""
        self.ensure_data_dir()
        with write_lock(self.settings):
            with self._reading():
                pass  # reopens Chroma if another process wrote: never write from a stale view
            record = self.find_document(ref, scope)
            if check is not None:
                check(record)
            store = self.store
            store.renew_stamp()  # before and after the writes (see rag.index.store)
            store.forget_files([record.source])
            store.renew_stamp()
            self._forget_files_of(record)
            sync_lexical(store, self._lexical.root, force=True)
        return record

    def _forget_files_of(self, record: FileRecord) -> None:
        """The extracted text of a removed document (unless an indexed copy shares it) and,
        for an upload, the uploaded file."""
        folder = self.settings.data_dir / "extracted" / record.sha256[:24]
        if not any(r.sha256 == record.sha256 for r in self.indexed_files().values()):
            shutil.rmtree(folder, ignore_errors=True)
        source = Path(record.source)
        if source.is_relative_to(self.upload_dir_of(record.workspace).resolve()):
            source.unlink(missing_ok=True)

    def is_indexed(self, source: str) -> bool:
        """Whether ``source`` is still indexed (a removed document's quotes say it was)."""
        with self._reading() as store:
            return store.file_record(source) is not None

    def lexical(self) -> LexicalIndex:
        """The BM25 index matching the chunks (see ``rag.index.lexical.LexicalCache``)."""
        with self._reading() as store:
            return self._lexical.current(store)

    def retriever(self, top_k: int | None = None, scope: Scope | None = None) -> HybridRetriever:
        return HybridRetriever(
            self.store, self.embedder, self.lexical(), top_k or self.settings.top_k, scope
        )

    def ensure_ready(self) -> None:
        """Fail with a useful message when there is nothing (or the wrong thing) to ask."""
        with self._reading() as store:
            if store.count() == 0:
                raise StoreError("The index is empty: run `rag ingest` first.")
            store.check_embedder()

    def ask(
        self,
        question: str,
        top_k: int | None = None,
        history: History = (),
        filters: Filters | None = None,
        scope: Scope | None = None,
    ) -> Answer:
        """Answer from the indexed documents in ``scope`` (those ``filters`` keep), with
        verified citations, or abstain."""
        return self.ask_stream(question, top_k, history, filters, scope).finalize()

    def ask_stream(
        self,
        question: str,
        top_k: int | None = None,
        history: History = (),
        filters: Filters | None = None,
        scope: Scope | None = None,
        with_leads: bool = False,
    ) -> AnswerStream:
        """The answer as it is written; ``finalize()`` then gives it with checked citations.

        The one path of a question: check it, (with an LLM) rewrite a follow-up into a
        standalone question from ``history``, retrieve, decide (``Decision.verdict``), then
        answer, extractive (single-turn) or streamed by the LLM, which is asked unless nothing
        relevant was found, since it can answer what the quotes could not (or refuse).
        ``filters`` (checked before anything else runs) hold every arm of the retrieval.
        Only passages in ``scope`` are retrieved, so only they reach the LLM's context.
        ``with_leads``: a refusal with no closest passages gets leads instead (``_leads``).
        """
        question = check_question(question)
        self.ensure_ready()
        selection = self.selection(filters, scope)
        if not self.settings.llm_enabled:
            found = self.evidence(question, top_k, scope=scope, selection=selection)
            return AnswerStream.of(self._leads(found, with_leads))
        generator = Generator(self.settings)
        try:
            standalone = generator.standalone(question, history)
        except LLMError as error:
            found = self.evidence(question, top_k, scope=scope, selection=selection)
            return AnswerStream.of(fallback(self._leads(found, with_leads), error))
        found = self.evidence(standalone, top_k, scope=scope, selection=selection)
        if found.verdict is Verdict.NOTHING:
            return AnswerStream.of(self._leads(found, with_leads))

        def check(citations: list[Citation]) -> list[Citation]:
            return self.decision.supported(
                default_verifier(), standalone, citations, found.retrieval
            )

        return generator.stream(standalone, found.retrieval, found.extractive, check)

    @cached_property
    def word_vectors(self) -> WordVectors:
        """Single-word vectors for term alignment, cached for the life of the service."""
        return WordVectors(self.embedder)

    @property
    def decision(self) -> Decision:
        """The operating points, resolved once per settings object from them and the fitted
        defaults (``Decision.resolve``)."""
        if self._decision is None or self._decision[0] is not self.settings:
            self._decision = (self.settings, Decision.resolve(self.settings))
        return self._decision[1]

    def selection(self, filters: Filters | None, scope: Scope | None = None) -> Selection | None:
        """``filters`` resolved against the indexed documents in ``scope`` (``FilterError``
        when one names nothing there: a document of another workspace is not named, so the
        error does not tell it exists)."""
        if filters is None:
            return None
        with self._reading() as store:
            return filters.resolve(store.file_records(where_of(scope)).values())

    def evidence(
        self,
        question: str,
        top_k: int | None = None,
        exclude: Collection[str] = (),
        selection: Selection | None = None,
        scope: Scope | None = None,
    ) -> Evidence:
        """What ``question`` retrieves in ``scope`` (never the chunk ids in ``exclude``, only
        inside ``selection``), the judgement over it and the extractive answer."""
        with self._reading():
            retriever = self.retriever(top_k, scope)
            retrieval = retriever.search(question, exclude=exclude, selection=selection)
        decision = self.decision
        judge = Judge(
            retriever.lexical,
            self.word_vectors,
            score=decision.score,
            every_feature=self.every_feature,
        )
        judgement = judge.judge(question, retrieval)
        answer = extractive_answer(retrieval, judgement, decision)
        return Evidence(retrieval, judgement, answer, decision.verdict(answer.confidence))

    @staticmethod
    def _leads(found: Evidence, wanted: bool) -> Answer:
        """The extractive answer; when ``wanted`` and it is a refusal with no closest
        passages (below the gate), with the retrieved sentences that share a word with the
        question as its closest ones (``rag.answering.extractive.leads``): what the
        documents do say on the subject, never an answer. The chat shows them; the API and
        the CLI keep such a refusal empty."""
        answer = found.extractive
        below_gate = answer.abstained and not answer.closest and answer.confidence is not None
        if not (wanted and below_gate):
            return answer
        return replace(answer, closest=leads(found.judgement, found.retrieval))

    @property
    def upload_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def upload_dir_of(self, workspace: str) -> Path:
        """Where a workspace's uploads are kept: the default's as before, the others'
        outside it (re-indexing the default's folder must not take them in)."""
        if workspace == DEFAULT_WORKSPACE:
            return self.upload_dir
        return self.settings.data_dir / "workspaces" / workspace / "uploads"

    def add_uploads(
        self,
        uploads: list[tuple[str, bytes]],
        progress: ProgressFn | None = None,
        added_by: str = "",
        workspace: str = DEFAULT_WORKSPACE,
    ) -> IngestReport:
        """Save uploaded files under the upload folder and index them at once, as added by
        ``added_by`` (a file that cannot be saved or parsed is reported by name and not kept;
        ``rag.ingest.uploads.ingest_uploads``)."""
        self.ensure_data_dir()
        return ingest_uploads(
            self.upload_dir_of(workspace),
            uploads,
            self.settings.max_file_mb,
            lambda saved: self.ingest(
                saved,
                progress=progress,
                show_progress=False,
                added_by=added_by,
                workspace=workspace,
            ),
        )

    def document_text(self, ref: str, scope: Scope | None = None) -> str | None:
        """The text citation offsets point into, as indexed, or None
        (``rag.documents.citations.document_text``): never what a path points to now, nor
        a text outside ``scope``."""
        if scope is not None and ref not in self.document_refs(scope):
            return None
        with self._reading() as store:
            record = store.file_record(ref)
        return document_text(ref, self.settings.data_dir / "extracted", record and record.sha256)

    def document_refs(self, scope: Scope | None = None) -> list[str]:
        """Every text a citation of this index (in ``scope``) can point into, and nothing else.

        A plain text or Markdown file is its own text; a PDF or HTML file's texts are its
        extracted parts, stored under a folder named after the file's hash. The HTTP API
        serves only these, so a document id can never be made to read another file.
        """
        with self._reading() as store:
            records = store.file_records(where_of(scope)).values()
        return document_refs(records, self.settings.data_dir / "extracted")

    def warm_up(self) -> None:
        """Load what the first question needs (model, Chroma segments, BM25 index), ahead of
        time for the app's server: one retrieval, no LLM; a corpus not indexed yet is left."""
        with contextlib.suppress(StoreError):
            self.ensure_ready()
            self.evidence("warm-up", None)

    def status(self, scope: Scope | None = None) -> CorpusStatus:
        with self._reading() as store:
            files = store.file_records(where_of(scope))
            chunks = store.count() if scope is None else sum(f.chunks for f in files.values())
        mode = f"llm:{self.settings.llm_model}" if self.settings.llm_enabled else "extractive"
        return CorpusStatus(len(files), chunks, self.embedder.model_id, mode)


def answer_json(answer: Answer, *, absolute: bool = False) -> dict:
    """An answer as ``rag ask --json`` prints it and ``POST /v1/ask`` returns it: its
    citations as clients receive them (``rag.documents.citations.public_json``), with no
    server path unless ``absolute``."""
    return {
        **answer.to_json(),
        "citations": [public_json(c, absolute=absolute) for c in answer.citations],
        "closest": [public_json(c, absolute=absolute) for c in answer.closest],
    }


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
