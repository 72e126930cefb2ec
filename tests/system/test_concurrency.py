"""Questions while an ingest runs: threads of one process, and separate processes.

On an embedded store, ingests take turns (``rag.datadir.write_lock``), each Chroma write
excludes readers for its duration only, and a process reopens Chroma when another process
wrote (``rag.datadir.LocalSync``). See docs/architecture.md, "Concurrency".
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rag.documents.citations import SourceCache
from rag.service import RagService, answer_json
from tests.conftest import PIAF, ROOT, SEED, make_settings, piaf_passages, write_piaf_corpus
from tests.procs import child_env

N_PASSAGES = 100
KURSK = "How many workers are in Kursk?"
KURSK_QUOTE = "plus de mille spécialistes nord-coréens"
# Far from both corpora, so the check is about answers staying sane during writes, not about
# calibration, which benchmarks/answers.py measures (a question near some PIAF sentence, such
# as "What is the capital of Australia?" against one naming Béjaïa a capital, is a matter of
# the confidence model, not of concurrency).
OFF_CORPUS = "How many calories are in a banana?"


def _questions(n_passages: int, limit: int = 8) -> list[str]:
    """French PIAF questions about the first ``n_passages`` passages."""
    ids = {row["passage_id"] for row in piaf_passages(n_passages)}
    with (PIAF / "questions_dev.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [row["question"] for row in rows if row["passage_id"] in ids][:limit]


def _seed_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / SEED.name).write_bytes(SEED.read_bytes())
    return folder


def _check(question: str, answer: dict, root: Path) -> None:
    """Citations match their files exactly; the seed question is always answered.

    ``answer`` is as clients get it (``answer_json``): each ``source`` is relative to the
    folder it was indexed from, one of the folders in ``root``.
    """
    cache = SourceCache()
    for cite in answer["citations"]:
        (path,) = root.glob(f"*/{cite['source']}")
        text = cache.text(str(path))
        assert text is not None and text[cite["start"] : cite["end"]] == cite["quote"]
    if question == KURSK:
        assert not answer["abstained"]
        assert any(KURSK_QUOTE in c["quote"] for c in answer["citations"]), answer
    if question == OFF_CORPUS:
        assert answer["abstained"], answer


def _env(data_dir: Path) -> dict[str, str]:
    return child_env(data_dir)


def _cli(*args: str, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rag.cli", *args],
        cwd=ROOT,
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_consistent(data_dir: Path, n_files: int) -> None:
    """Manifest, chunks, sentences, vector index and BM25 index all agree."""
    service = RagService(make_settings(data_dir))
    store = service.store
    records = store.file_records()
    assert len(records) == n_files
    ids = [chunk.id for chunk in store.all_chunks()]
    assert len(ids) == len(set(ids)) == sum(r.chunks for r in records.values()) == store.count()
    assert sorted(service.lexical().ids) == sorted(ids)
    # Every stored vector is findable (none lost from the HNSW index by a racing writer).
    probe = [1.0] * store.dim
    assert len(store.nearest_chunks(probe, store.count())) == store.count()
    n_sentences = store.sentences.count()
    assert len(store.nearest_sentences(probe, n_sentences)) == n_sentences


def test_twenty_threads_ask_while_another_thread_ingests(tmp_path: Path) -> None:
    seed = _seed_corpus(tmp_path / "seed")
    piaf = write_piaf_corpus(tmp_path / "piaf", N_PASSAGES)
    settings = make_settings(tmp_path / "data", embed_batch_size=8)
    shared = RagService(settings)
    shared.ingest([seed], show_progress=False)
    other = RagService(settings)  # a second instance over the same data dir
    questions = [KURSK, OFF_CORPUS, *_questions(N_PASSAGES)]

    embedding = threading.Event()
    finished = threading.Event()
    asked: list[tuple[str, dict, bool]] = []

    def ingest():
        try:
            return shared.ingest([piaf], progress=lambda *_: embedding.set(), show_progress=False)
        finally:
            finished.set()

    def asker(i: int) -> None:
        service = shared if i % 2 else other
        for j in range(10):  # keep asking until the ingest has ended (and once after)
            question = questions[(i + j) % len(questions)]
            during = not finished.is_set()
            answer = answer_json(service.ask(question))
            asked.append((question, answer, during))
            if not during:
                return

    with ThreadPoolExecutor(max_workers=21) as pool:
        ingesting = pool.submit(ingest)
        assert embedding.wait(timeout=600), "the ingest never started embedding"
        askers = [pool.submit(asker, i) for i in range(20)]
        for future in askers:
            future.result()  # re-raises any exception from an ask
        report = ingesting.result()

    assert (report.added, report.failed) == (N_PASSAGES, [])
    assert sum(during for *_, during in asked) >= 20, "the asks did not overlap the ingest"
    for question, answer, _ in asked:
        _check(question, answer, tmp_path)
    _assert_consistent(tmp_path / "data", N_PASSAGES + 1)


def test_long_lived_service_follows_other_processes_writes(tmp_path: Path) -> None:
    """An app's service keeps answering, and sees new vectors, after CLI ingests."""
    data = tmp_path / "data"
    app = RagService(make_settings(data))
    app.ingest([_seed_corpus(tmp_path / "seed")], show_progress=False)
    assert not app.ask(KURSK).abstained  # Chroma is now loaded in this process

    more = write_piaf_corpus(tmp_path / "piaf", 5)
    other = _cli("ingest", str(more), data_dir=data)
    assert other.wait(timeout=600) == 0, other.stderr.read()
    _check(KURSK, answer_json(app.ask(KURSK)), tmp_path)
    assert app.status().documents == 6
    _assert_consistent(data, 6)  # the vectors written by the other process are searchable

    # This process writes next, after the other one: nothing the other wrote is lost.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "note.txt").write_text("Note\nLa cantine ferme à midi le vendredi.\n")
    assert app.ingest([extra], show_progress=False).added == 1
    _assert_consistent(data, 7)

    # Another process rebuilds from scratch: the collections are new ones.
    rebuild = _cli("ingest", "--rebuild", str(tmp_path / "seed"), data_dir=data)
    assert rebuild.wait(timeout=600) == 0, rebuild.stderr.read()
    _check(KURSK, answer_json(app.ask(KURSK)), tmp_path)
    assert app.status().documents == 1


@pytest.mark.slow
def test_ask_processes_while_an_ingest_process_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed = _seed_corpus(tmp_path / "seed")
    piaf = write_piaf_corpus(tmp_path / "piaf", N_PASSAGES)
    first = _cli("ingest", str(seed), data_dir=data)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    questions = [KURSK, OFF_CORPUS, *_questions(N_PASSAGES, limit=3)]

    ingest = _cli("ingest", str(piaf), data_dir=data)
    long_lived = RagService(make_settings(data))  # an app's service, in this process
    results: list[tuple[str, subprocess.CompletedProcess, bool]] = []
    in_process: list[tuple[str, dict]] = []
    for wave in range(5):  # 20 ask processes, 4 at a time
        batch = [questions[(wave * 4 + i) % len(questions)] for i in range(4)]
        procs = [(q, _cli("ask", q, "--json", data_dir=data)) for q in batch]
        while any(proc.poll() is None for _, proc in procs):
            question = questions[len(in_process) % len(questions)]
            in_process.append((question, answer_json(long_lived.ask(question))))
        for question, proc in procs:
            out, err = proc.communicate(timeout=600)
            done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            results.append((question, done, ingest.poll() is None))
    out, err = ingest.communicate(timeout=1200)
    assert ingest.returncode == 0, err
    assert f"{N_PASSAGES} added" in out

    assert len(results) == 20
    for question, done, _ in results:
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        _check(question, json.loads(done.stdout), tmp_path)
    assert sum(during for *_, during in results) >= 4, "no ask overlapped the ingest"
    for question, answer in in_process:
        _check(question, answer, tmp_path)
    _assert_consistent(data, N_PASSAGES + 1)


@pytest.mark.slow
def test_two_ingest_processes_take_turns(tmp_path: Path) -> None:
    """Concurrent writers on one embedded store are serialised, so no vector is lost."""
    data = tmp_path / "data"
    rows = piaf_passages(60)
    corpora = []
    for name, part in (("a", rows[:30]), ("b", rows[30:])):
        folder = tmp_path / name
        folder.mkdir()
        for row in part:
            (folder / f"{row['passage_id']}.txt").write_text(
                f"{row['title']}\n{row['text']}\n", encoding="utf-8"
            )
        corpora.append(folder)
    # The data dir exists already, as after a user's first `rag ingest`. (Not opened in
    # this process: a process that loaded a collection does not see other processes' vectors.)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("ingest", str(empty), data_dir=data).wait(timeout=600) == 0
    procs = [_cli("ingest", str(folder), data_dir=data) for folder in corpora]
    outputs = [proc.communicate(timeout=1200) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "30 added" in out
    waited = [err for _, err in outputs if "waiting for another ingest" in err]
    assert len(waited) <= 1
    _assert_consistent(data, 60)
