"""Hostile and odd inputs: each has a documented outcome (docs/architecture.md, "Limits and
hardening")."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from rag.documents.formats import read_text
from rag.index.store import StoreError
from rag.ingest.files import MB, discover
from rag.service import RagService
from tests.conftest import SEED, make_settings, run_cli

KURSK = "How many workers are in Kursk?"
KURSK_QUOTE = "plus de mille spécialistes nord-coréens"


def _seed_copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SEED, folder / SEED.name)
    return folder


def _assert_exact(answer) -> None:
    """Every citation is the source text at its offsets, decoded the way ingest read it."""
    for cite in answer.citations:
        assert read_text(Path(cite.source)).text[cite.start : cite.end] == cite.quote


def test_file_over_the_size_limit_is_skipped_with_the_reason(
    tmp_path: Path, service: RagService
) -> None:
    corpus = _seed_copy(tmp_path / "corpus")
    huge = corpus / "huge.txt"
    with huge.open("wb") as fh:  # 50 MB on one line, no newline
        for _ in range(50):
            fh.write(b"a" * MB)
    started = time.monotonic()
    report = service.ingest([corpus], show_progress=False)
    assert dict(report.failed) == {
        str(huge.resolve()): "too large (50.0 MB > 20 MB limit, RAG_MAX_FILE_MB)"
    }
    assert report.added == 1
    assert time.monotonic() - started < 60, "the large file must not be read"
    assert str(huge.resolve()) not in service.store.file_records()

    # An upload over the limit is refused before it is saved.
    up = service.add_uploads([("big.txt", b"b" * (21 * MB))])
    assert up.failed == [("big.txt", "too large (21.0 MB > 20 MB limit, RAG_MAX_FILE_MB)")]
    assert not (service.upload_dir / "big.txt").exists()


def test_size_limit_comes_from_the_environment(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "small.txt").write_text("Petit fichier.\nIl tient en une ligne.\n")
    (corpus / "bigger.txt").write_text("Fichier plus gros.\n" + "mot " * 2000 + "\n")
    limit = {"RAG_MAX_FILE_MB": "0.005"}  # about 5 KB
    run = run_cli("ingest", str(corpus), data_dir=tmp_path / "data", env=limit)
    assert run.returncode == 0, run.stderr
    assert "failed: " in run.stderr and "bigger.txt: too large (" in run.stderr
    assert "bigger.txt: too large (0.0076 MB > 0.005 MB limit, RAG_MAX_FILE_MB)" in run.stderr
    assert "1 added" in run.stdout and "1 failed" in run.stdout
    # 0 switches the limit off.
    files, failed = discover([corpus], max_file_mb=0)
    assert len(files) == 2 and failed == []


def test_long_single_line_is_chunked_with_exact_offsets(
    tmp_path: Path, service: RagService
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    phrase = "le port de Marseille accueille des ferries et des cargos chaque jour"
    line = " ".join(f"{phrase} {i}" for i in range(330))  # ~24 KB on one line, no sentence end
    (corpus / "line.txt").write_text(line, encoding="utf-8")
    report = service.ingest([corpus], show_progress=False)
    assert report.added == 1 and report.chunks_embedded > 5
    chunks = service.store.all_chunks()
    texts = [chunk.text for chunk in chunks]
    for chunk in chunks:
        assert line[chunk.meta["start"] : chunk.meta["end"]] == chunk.text
    assert sum(len(t) for t in texts) >= len(line) - len(texts)  # nothing lost but spaces


def test_invalid_utf8_is_read_as_latin1_with_a_note(tmp_path: Path, service: RagService) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    latin1 = corpus / "gare.txt"
    latin1.write_bytes(
        "La gare de Pontivy\nLe café de la gare de Pontivy est fermé le mercredi "
        "depuis l'été 2021.\n".encode("latin-1")
    )
    report = service.ingest([corpus], show_progress=False)
    assert report.added == 1
    assert report.notes == [f"{latin1.resolve()}: not valid UTF-8, read as latin-1"]
    answer = service.ask("Quel jour le café de la gare de Pontivy est-il fermé ?")
    assert not answer.abstained, answer
    assert any("fermé le mercredi" in c.quote for c in answer.citations), answer
    _assert_exact(answer)
    assert latin1.read_bytes().decode("latin-1").startswith("La gare de Pontivy")

    run = run_cli("ingest", str(corpus), data_dir=tmp_path / "cli-data")
    assert f"note: {latin1.resolve()}: not valid UTF-8, read as latin-1" in run.stderr


def test_nul_bytes_mean_binary_and_are_skipped(tmp_path: Path, service: RagService) -> None:
    corpus = _seed_copy(tmp_path / "corpus")
    (corpus / "nul.txt").write_bytes(b"Du texte\x00 avec un octet nul.\n")
    (corpus / "utf16.txt").write_text("Texte en UTF-16.\n", encoding="utf-16")
    report = service.ingest([corpus], show_progress=False)
    failed = dict(report.failed)
    for name in ("nul.txt", "utf16.txt"):
        assert failed[str((corpus / name).resolve())] == "looks binary (contains NUL bytes)"
    assert report.added == 1


def test_zero_width_characters_are_indexed_and_cited_exactly(
    tmp_path: Path, service: RagService
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seed = SEED.read_text(encoding="utf-8")
    # A BOM, zero-width spaces between words, a joiner, a soft hyphen and a word joiner.
    odd = "\ufeff" + seed.replace(" de mille ", " de\u200b mille\u200b ").replace(
        "spécialistes", "spécia\u00adlistes\u200d"
    ).replace("Kursk,", "Kursk\u2060,")
    assert odd != "\ufeff" + seed
    (corpus / "zero-width.txt").write_text(odd, encoding="utf-8")
    assert service.ingest([corpus], show_progress=False).added == 1
    answer = service.ask("How many workers are in Kursk?")
    assert not answer.abstained, answer
    cited = [c for c in answer.citations if "mille\u200b" in c.quote]
    assert cited, answer
    _assert_exact(answer)
    assert odd[cited[0].start : cited[0].end] == cited[0].quote


def test_symlink_loops_terminate_without_duplicates(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    sub = corpus / "sub"
    sub.mkdir(parents=True)
    (corpus / "a.txt").write_text("Premier fichier.\nLe phare de Kerbrannec guide les pêcheurs.\n")
    (sub / "b.txt").write_text("Second fichier.\nLa gare de Pontivy ferme le mercredi.\n")
    (sub / "parent").symlink_to("..", target_is_directory=True)  # loop to the parent
    (corpus / "self").symlink_to(".", target_is_directory=True)  # loop to itself
    (corpus / "alias.txt").symlink_to("a.txt")  # a second name for a.txt
    (corpus / "dead.txt").symlink_to("missing.txt")  # dangling
    (corpus / "x.txt").symlink_to("y.txt")  # a file-link loop
    (corpus / "y.txt").symlink_to("x.txt")

    files, failed = discover([corpus])
    assert files == [(corpus / "a.txt").resolve(), (sub / "b.txt").resolve()]
    assert failed == []

    data = tmp_path / "data"
    run = run_cli("ingest", str(corpus), data_dir=data, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "2 added" in run.stdout and "0 failed" in run.stdout
    # Entering through the loop finds the same two files, already indexed.
    again = run_cli("ingest", str(sub / "parent"), data_dir=data, timeout=300)
    assert "0 added, 0 updated, 2 unchanged" in again.stdout, again.stdout + again.stderr
    sources = list(RagService(make_settings(data)).store.file_records())
    assert sorted(sources) == sorted(str(f) for f in files)


def test_upload_names_never_escape_the_upload_folder(tmp_path: Path, service: RagService) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("must stay unchanged")
    service.ensure_data_dir()
    service.upload_dir.mkdir(parents=True)
    (service.upload_dir / "planted.txt").symlink_to(outside)  # a link planted beforehand
    body = "Note de service.\nLa cantine ferme à quatorze heures le vendredi.\n".encode()
    names = [
        "../../etc/passwd",
        "../../etc/passwd.txt",
        "..\\..\\windows\\evil.md",
        "/absolute/path/notes.md",
        "..",
        "planted.txt",
        "x" * 300 + ".txt",
    ]
    report = service.add_uploads([(name, body) for name in names])
    failed = dict(report.failed)
    assert failed["../../etc/passwd"].startswith("unsupported file type")
    assert "not a usable file name" in failed[".."]
    saved = sorted(p.name for p in service.upload_dir.iterdir())
    assert saved == sorted(["passwd.txt", "evil.md", "notes.md", "planted.txt", "x" * 196 + ".txt"])
    upload_root = service.upload_dir.resolve()
    for source in service.store.file_records():
        assert Path(source).parent == upload_root
    assert report.added == 5
    assert outside.read_text() == "must stay unchanged"
    assert not (service.upload_dir / "planted.txt").is_symlink()
    assert not (tmp_path / "etc").exists() and not Path("/etc/passwd.txt").exists()


def test_first_upload_into_a_new_data_dir(service: RagService) -> None:
    assert not service.settings.data_dir.exists()
    report = service.add_uploads([("note.txt", "Note.\nLa cantine ferme à midi.\n".encode())])
    assert (report.added, report.failed) == (1, [])


@pytest.fixture(scope="module")
def indexed_data_dir(tmp_path_factory) -> tuple[Path, Path]:
    """A data dir holding the seed, built by the CLI; tests copy it before damaging it."""
    root = tmp_path_factory.mktemp("indexed")
    corpus = _seed_copy(root / "corpus")
    run = run_cli("ingest", str(corpus), data_dir=root / "data")
    assert run.returncode == 0, run.stderr
    return root / "data", corpus


def _one_line_error(run) -> str:
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_chroma_database_is_refused_with_a_fix(
    tmp_path: Path, indexed_data_dir: tuple[Path, Path], damage: str
) -> None:
    source, corpus = indexed_data_dir
    data = tmp_path / "data"
    shutil.copytree(source, data)
    db = data / "chroma" / "chroma.sqlite3"
    original = db.read_bytes()
    db.write_bytes(b"\x42" * 100_000 if damage == "garbage" else original[: len(original) // 2])
    damaged = db.read_bytes()

    error = _one_line_error(run_cli("ask", KURSK, data_dir=data))
    assert "cannot be opened as a Chroma database" in error and "corrupt" in error
    assert f"delete {data}" in error and "rag ingest" in error
    # Ingest refuses too, and nothing was overwritten.
    _one_line_error(run_cli("ingest", str(corpus), data_dir=data))
    assert db.read_bytes() == damaged
    # In one process, a second attempt gives the same message (not a stale Chroma system).
    for _ in range(2):
        with pytest.raises(StoreError, match="cannot be opened as a Chroma database"):
            RagService(make_settings(data)).store  # noqa: B018 - opening is the test


def test_data_dir_of_another_index_format_is_refused(
    tmp_path: Path, indexed_data_dir: tuple[Path, Path]
) -> None:
    source, corpus = indexed_data_dir
    data = tmp_path / "data"
    shutil.copytree(source, data)
    (data / "rag-data.json").write_text(json.dumps({"schema_version": 99}))
    error = _one_line_error(run_cli("ingest", str(corpus), data_dir=data))
    assert "index format 99" in error and "RAG_DATA_DIR" in error
    assert json.loads((data / "rag-data.json").read_text()) == {"schema_version": 99}


@pytest.mark.slow
def test_ten_thousand_tiny_files(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny"
    for shard in range(10):
        folder = corpus / f"{shard}"
        folder.mkdir(parents=True)
        for i in range(1000):
            n = shard * 1000 + i
            (folder / f"note-{n:05d}.txt").write_text(f"Note {n} : code {n * 7919 % 100003}.")
    service = RagService(make_settings(tmp_path / "data", embed_batch_size=128))
    report = service.ingest([corpus], show_progress=False)
    assert (report.added, report.failed, report.chunks_embedded) == (10_000, [], 10_000)
    assert len(service.store.file_records()) == 10_000 == service.store.count()
    assert len(service.lexical().ids) == 10_000
    again = service.ingest([corpus], show_progress=False)
    assert (again.unchanged, again.chunks_embedded) == (10_000, 0)
    hits = service.retriever().search("Note 4242 : code ?").nodes
    assert any(hit.node.text.startswith("Note 4242 :") for hit in hits)
    _assert_exact(service.ask("Note 4242 : code ?"))
