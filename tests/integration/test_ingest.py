"""Ingestion against the real embedder and a real embedded Chroma."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.index.lexical import LexicalIndex
from rag.index.store import StoreError
from rag.service import RagService
from tests.conftest import ROOT, SEED, make_settings
from tests.fakes import FakeEmbedder


def _corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SEED, corpus / SEED.name)
    return corpus


def test_chunks_carry_verified_offsets_and_lines(seed_service: RagService) -> None:
    chunks = seed_service.store.all_chunks()
    assert chunks, "the seed produced no chunks"
    original = SEED.read_text(encoding="utf-8")
    for chunk in chunks:
        assert original[chunk.meta["start"] : chunk.meta["end"]] == chunk.text
        assert chunk.meta["line"] == original.count("\n", 0, chunk.meta["start"]) + 1
        assert chunk.meta["title"].startswith("La Corée du Nord renforce")
    sentences = seed_service.store.all_sentences()
    assert len(sentences) >= 11, "every line of the seed is at least one sentence"
    for sentence in sentences:
        meta = sentence.meta
        assert original[meta["start"] : meta["end"]] == sentence.text
        assert meta["line"] == original.count("\n", 0, meta["start"]) + 1
        assert meta["chunk_id"] in {chunk.id for chunk in chunks}


def test_reingest_unchanged_embeds_nothing(tmp_path: Path, service: RagService) -> None:
    corpus = _corpus(tmp_path)
    first = service.ingest([corpus], show_progress=False)
    assert first.added == 1 and first.chunks_embedded > 0
    again = service.ingest([corpus], show_progress=False)
    assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, 1, 0)
    assert "0 chunks embedded" in again.summary()


def test_changed_file_replaces_its_chunks_and_prune_removes_deleted(
    tmp_path: Path, service: RagService
) -> None:
    corpus = _corpus(tmp_path)
    extra = corpus / "note.md"
    extra.write_text("# Note\nLe port de Marseille accueille des ferries.\n", encoding="utf-8")
    service.ingest([corpus], show_progress=False)
    before = service.store.count()
    extra.write_text(
        "# Note\nLe port de Marseille accueille des ferries.\nIl a été agrandi en 2019.\n",
        encoding="utf-8",
    )
    report = service.ingest([corpus], show_progress=False)
    assert (report.updated, report.unchanged) == (1, 1)
    chunks = service.store.all_chunks()
    note_texts = [c.text for c in chunks if c.meta["source"] == str(extra.resolve())]
    assert any("agrandi en 2019" in t for t in note_texts)
    assert len(chunks) == len({c.id for c in chunks})
    extra.unlink()
    pruned = service.ingest([corpus], prune=True, show_progress=False)
    assert pruned.pruned == 1
    assert service.store.count() < before + 1
    assert str(extra.resolve()) not in service.store.file_records()
    assert set(service.lexical().ids) == {c.id for c in service.store.all_chunks()}


def test_bad_files_are_reported_and_skipped(tmp_path: Path, service: RagService) -> None:
    corpus = _corpus(tmp_path)
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02garbage")
    (corpus / "empty.md").write_text("   \n")
    (corpus / "latin1.txt").write_bytes("Le café de la gare est fermé.".encode("latin-1"))
    report = service.ingest([corpus, tmp_path / "missing"], show_progress=False)
    failed = dict(report.failed)
    assert "binary" in failed[str((corpus / "binary.txt").resolve())]
    assert "empty" in failed[str((corpus / "empty.md").resolve())]
    assert "no such file" in failed[str(tmp_path / "missing")]
    assert report.added == 2
    assert any("latin-1" in note for note in report.notes)


def test_rebuild_starts_over(tmp_path: Path, service: RagService) -> None:
    corpus = _corpus(tmp_path)
    service.ingest([corpus], show_progress=False)
    count = service.store.count()
    report = service.ingest([corpus], rebuild=True, show_progress=False)
    assert report.added == 1 and report.chunks_embedded == count == service.store.count()


def test_other_embedder_is_refused_with_rebuild_hint(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    service = RagService(settings)
    service.ingest([_corpus(tmp_path)], show_progress=False)
    meta = dict(service.store.chunks.metadata)
    meta["embed_model"] = "some/other-model"
    service.store.chunks.modify(metadata=meta)
    with pytest.raises(StoreError, match="--rebuild"):
        RagService(settings).ask("How many workers are in Kursk?")


def test_foreign_data_dir_is_not_overwritten(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.db").write_text("not ours")
    with pytest.raises(StoreError, match="not a data directory"):
        RagService(Settings(data_dir=foreign)).store  # noqa: B018 - opening is the test
    assert (foreign / "precious.db").read_text() == "not ours"


def test_bm25_index_from_the_previous_release_is_rebuilt(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    """An index saved before freshness tokens (``ids.json`` without one) is rebuilt on the
    next ingest or question, never read as current and never a crash."""
    corpus = _corpus(tmp_path)
    service = RagService(make_settings(tmp_path / "data"), embedder=fake_embedder)
    service.ingest([corpus], show_progress=False)
    root = service.settings.data_dir / "lexical" / service.collection
    meta_file = root / (root / "CURRENT").read_text().strip() / "ids.json"
    ids = json.loads(meta_file.read_text())["ids"]
    meta_file.write_text(json.dumps({"ids": ids}))  # the previous release's format
    assert LexicalIndex.load(root) is None
    later = RagService(make_settings(tmp_path / "data"), embedder=fake_embedder)
    later.ingest([corpus], show_progress=False)  # nothing changed: no re-embedding
    assert LexicalIndex.load(root) is not None  # rebuilt in the current format
    assert later.lexical().ids


def _many_files(tmp_path: Path, n: int) -> Path:
    corpus = tmp_path / "many"
    corpus.mkdir()
    for i in range(n):
        (corpus / f"note-{i:02d}.txt").write_text(
            f"Note {i}\nLa note {i} parle de la ville de Koursk.\n"
        )
    return corpus


def test_progress_counts_stored_bytes_from_the_calling_thread(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    """Writes run in a store thread beside the embedding; progress is reported here, once
    a batch is in Chroma (a Streamlit progress bar cannot be updated from another thread),
    in bytes of the files: chunk counts are known only file by file."""
    service = RagService(
        make_settings(tmp_path / "data", embed_batch_size=2), embedder=fake_embedder
    )
    corpus = _many_files(tmp_path, 7)
    size = sum(p.stat().st_size for p in corpus.iterdir())
    seen: list[tuple[int, int, int]] = []

    def progress(done: int, total: int) -> None:
        assert threading.current_thread() is threading.main_thread()
        seen.append((done, total, service.store.count()))

    report = service.ingest([corpus], progress=progress, show_progress=False)
    assert report.chunks_embedded == 7
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == size and len(done) == 4
    assert all(total == size for _, total, _ in seen)
    assert [stored for _, _, stored in seen] == [2, 4, 6, 7]


def test_files_are_read_as_the_embedder_reaches_them(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory holds the files of the batch being embedded, not the corpus (CIDRE's chunk
    nodes alone were 390 MB when every file was read first)."""
    from rag.ingest import pipeline as ingest

    loaded: list[str] = []
    real_load = ingest.load_file
    monkeypatch.setattr(
        ingest, "load_file", lambda path, *rest: loaded.append(path.name) or real_load(path, *rest)
    )
    loaded_at_embed: list[int] = []
    real_embed = fake_embedder.embed_passages

    def embed(texts):
        loaded_at_embed.append(len(loaded))
        return real_embed(texts)

    monkeypatch.setattr(fake_embedder, "embed_passages", embed)
    service = RagService(
        make_settings(tmp_path / "data", embed_batch_size=2), embedder=fake_embedder
    )
    report = service.ingest([_many_files(tmp_path, 7)], show_progress=False)
    assert report.added == 7 and len(service.store.file_records()) == 7
    assert loaded_at_embed[:4] == [2, 4, 6, 7], "each batch reads only the files it needs"


def test_a_failed_write_stops_the_ingest_and_a_rerun_completes_it(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _many_files(tmp_path, 7)
    service = RagService(
        make_settings(tmp_path / "data", embed_batch_size=2), embedder=fake_embedder
    )
    store = service.store
    real_add = store.add_sentences
    calls = 0

    def flaky(*args, **kwargs) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreError("disk full")
        real_add(*args, **kwargs)

    monkeypatch.setattr(store, "add_sentences", flaky)
    with pytest.raises(StoreError, match="disk full"):
        service.ingest([corpus], show_progress=False)
    assert calls == 2, "nothing is written after a failed write"
    recorded = store.file_records()
    assert 0 < len(recorded) <= 2, "only files of the first, stored batch are recorded"
    monkeypatch.setattr(store, "add_sentences", real_add)
    report = service.ingest([corpus], show_progress=False)
    assert (report.unchanged, report.added) == (len(recorded), 7 - len(recorded))
    assert store.count() == 7 and len(store.file_records()) == 7


def test_long_paragraphs_are_chunked_without_importing_nltk(tmp_path: Path) -> None:
    """The chunker's sentence step is ours: NLTK (and the SciPy it imports) cost an
    ingest 2 s."""
    code = (
        "import sys\n"
        "from rag.ingest.chunking import _chunk_spans, make_splitter\n"
        "text = 'Les ouvriers nord-coréens arrivent à Koursk. ' * 200\n"
        "assert len(list(_chunk_spans(text, make_splitter(256, 0)))) > 1\n"
        "print('nltk' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_short_sentences_are_scored_without_a_stored_vector(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    """A sentence under 30 characters never ranks chunks, so it is stored without a vector
    (35 % of a novel's sentences); the answer step cuts it from its chunk and embeds it, so
    it can still be quoted, with the same id and offsets as if it had been stored."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = "Le phare\nLe phare de Kerbihan fut allumé en 1881 par les marins.\nIl brille.\n"
    (corpus / "phare.txt").write_text(text, encoding="utf-8")
    service = RagService(make_settings(tmp_path / "data"), embedder=fake_embedder)
    service.ingest([corpus], show_progress=False)
    assert [s.text for s in service.store.all_sentences()] == [
        "Le phare de Kerbihan fut allumé en 1881 par les marins."
    ]
    found = service.retriever().search("Le phare brille")
    scored = {s.text: s for s in found.sentences}
    assert set(scored) == {
        "Le phare",
        "Le phare de Kerbihan fut allumé en 1881 par les marins.",
        "Il brille.",
    }
    short = scored["Il brille."]
    assert text[short.meta["start"] : short.meta["end"]] == "Il brille." and short.line == 3
    expected = fake_embedder.embed_passages(["Il brille."])[0]
    assert short.vector is not None and np.allclose(short.vector, expected)


def test_stored_sentences_are_read_by_id_or_else_by_their_chunk(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer step reads the top chunks' stored sentences by id (cut again from the
    chunk); if an id is not found (an index whose sentences were cut by other rules), it
    reads the chunk's sentences through the store's filter instead, losing none."""
    service = RagService(make_settings(tmp_path / "data"), embedder=fake_embedder)
    service.ingest([_many_files(tmp_path, 3)], show_progress=False)
    retriever = service.retriever()
    by_id = {(s.text, s.similarity) for s in retriever.search("la ville de Koursk").sentences}
    monkeypatch.setattr(service.store, "sentences_by_id", lambda ids: [])
    by_chunk = {(s.text, s.similarity) for s in retriever.search("la ville de Koursk").sentences}
    assert by_id == by_chunk
    assert {text for text, _ in by_id} >= {
        f"La note {i} parle de la ville de Koursk." for i in range(3)
    }


def test_whole_collections_are_read_in_pages(
    tmp_path: Path, fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading every chunk, sentence and file record goes page by page: one unpaged ``get``
    of the whole CIDRE corpus (62,773 chunks) failed in Chroma with "too many SQL
    variables" when the BM25 index was built. Pages of 2 records read the same records."""
    corpus = _many_files(tmp_path, 5)
    service = RagService(make_settings(tmp_path / "data"), embedder=fake_embedder)
    service.ingest([corpus], show_progress=False)
    store = service.store
    whole = (store.all_chunks(), store.all_sentences(), store.file_records())
    monkeypatch.setattr("rag.index.store.GET_PAGE", 2)
    paged = (store.all_chunks(), store.all_sentences(), store.file_records())
    assert [len(x) for x in whole] == [5, 5, 5]
    assert sorted(c.id for c in paged[0]) == sorted(c.id for c in whole[0])
    assert sorted(s.id for s in paged[1]) == sorted(s.id for s in whole[1])
    assert all(s.vector is not None for s in paged[1])
    assert paged[2] == whole[2]
