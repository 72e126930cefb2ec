"""Filters by document, date and folder, applied inside each retrieval arm (real Chroma, real
embedder, real BM25), and the documents' own dates on chunks, sentences and citations.

The corpus is news-like: the port of Brest in 2021 and in 2023 (Markdown, dated by front
matter), other Breton notes dated around the 2021 boundaries, and two southern notes dated by
their modification time, one holding a made-up word that only BM25 can find.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from rag.retrieval.filters import FilterError, Filters
from rag.service import RagService
from tests.conftest import make_settings, run_cli

BREST_2023 = "Combien de navires de pêche le port de Brest a-t-il accueillis en 2023 ?"
RARE_WORD = "zorglubium"
NOTES = {
    "ouest/brest-2021.md": (
        "2021-06-30",
        "# Le port de Brest en 2021\n\nLe port de Brest a accueilli 2950 navires de pêche en "
        "2021, selon la capitainerie.\n",
    ),
    "ouest/brest-2023.md": (
        "2023-06-30",
        "# Le port de Brest en 2023\n\nLe port de Brest a accueilli exactement 4321 navires de "
        "pêche en 2023, un record depuis la création du registre.\n",
    ),
    "ouest/quimper-2021.md": (
        "2021-03-01",
        "# La faïencerie de Quimper\n\nLa faïencerie de Quimper emploie 45 artisans qui "
        "peignent la vaisselle à la main.\n",
    ),
    "ouest/morlaix-2021.md": (
        "2021-12-31",
        "# Le viaduc de Morlaix\n\nLe viaduc de Morlaix mesure 292 mètres de long et domine "
        "le port de la ville.\n",
    ),
    "ouest/rennes-2022.md": (
        "2022-01-01",
        "# Le métro de Rennes\n\nLe métro de Rennes transporte 140000 voyageurs par jour sur "
        "ses deux lignes.\n",
    ),
}
# Dated by their modification time (plain text states no date).
MTIMES = {
    "sud/marseille.txt": (
        "2022-05-05",
        f"Les jardins de Marseille\nLe {RARE_WORD} ne pousse que dans les jardins du quartier "
        "du Panier, à Marseille.\n",
    ),
    "sud/nice.txt": (
        "2022-05-06",
        "La promenade de Nice\nLa promenade des Anglais mesure 7 kilomètres le long de la mer.\n",
    ),
}


def write_corpus(root: Path) -> Path:
    for name, (day, text) in NOTES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"---\ntitle: {name}\ndate: {day}\n---\n{text}", encoding="utf-8")
    for name, (day, text) in MTIMES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        noon = datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=UTC).timestamp()
        os.utime(path, (noon, noon))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("news"))


@pytest.fixture(scope="module")
def service(corpus: Path, tmp_path_factory) -> RagService:
    service = RagService(make_settings(tmp_path_factory.mktemp("news-data")))
    report = service.ingest([corpus], show_progress=False)
    assert report.added == len(NOTES) + len(MTIMES), report
    return service


def source(corpus: Path, name: str) -> str:
    return str((corpus / name).resolve())


def dated(name: str) -> str:
    return {**NOTES, **MTIMES}[name][0]


def test_every_chunk_sentence_and_citation_carries_its_documents_date(
    service: RagService, corpus: Path
) -> None:
    by_source = {source(corpus, name): name for name in {**NOTES, **MTIMES}}
    for record in [*service.store.all_chunks(), *service.store.all_sentences()]:
        day = dated(by_source[record.meta["source"]])
        assert record.meta["date"] == day
        assert record.meta["date_int"] == int(day.replace("-", ""))
    answer = service.ask(BREST_2023)
    assert answer.citations and not answer.abstained
    assert all(c.date == dated(by_source[c.source]) for c in answer.citations)
    assert answer.to_json()["citations"][0]["date"] == "2023-06-30"


def inside(service: RagService, filters: Filters) -> set[str]:
    """The chunk ids of the documents ``filters`` keep."""
    allowed = filters.resolve(service.indexed_files().values())
    return {c.id for c in service.store.all_chunks() if allowed.admits(c.meta)}


def test_each_arm_searches_only_inside_the_filter(service: RagService, corpus: Path) -> None:
    retriever = service.retriever()
    outside = Filters.of(documents=[source(corpus, "sud/marseille.txt")])
    for filters, query in [
        (Filters.of(until="2022-12-31"), BREST_2023),  # the best answer is dated 2023
        (Filters.of(folder=str(corpus / "ouest")), f"Où pousse le {RARE_WORD} près du port ?"),
    ]:
        selection = filters.resolve(service.indexed_files().values())
        allowed = inside(service, filters)
        qvec = retriever.embed(query)
        where = selection.where()
        for arm in (retriever.chunk_ranking(qvec, where), retriever.sentence_ranking(qvec, where)):
            assert arm.ids and set(arm.ids) <= allowed
        lexical = retriever.lexical_search(query, selection)
        assert lexical.ids and set(lexical.ids) <= allowed
    # The made-up word is found by BM25 alone, in the one document holding it...
    unfiltered = retriever.lexical_search(RARE_WORD)
    assert set(unfiltered.ids) == inside(service, outside)
    # ...and never once that document is filtered out, whatever else matches.
    away = Filters.of(folder="ouest").resolve(service.indexed_files().values())
    assert retriever.lexical_search(f"{RARE_WORD} port", away).ids
    assert not set(retriever.lexical_search(f"{RARE_WORD} port", away).ids) & set(unfiltered.ids)


def test_a_filtered_question_still_gets_k_passages_inside_it(service: RagService) -> None:
    year = Filters.of(since="2021-01-01", until="2021-12-31")
    selection = year.resolve(service.indexed_files().values())
    found = service.retriever(3).search(BREST_2023, selection=selection)
    assert len(found.nodes) == 3  # brest-2021, quimper-2021, morlaix-2021: all there are
    assert {n.node.node_id for n in found.nodes} == inside(service, year)


def test_date_ranges_are_inclusive(service: RagService, corpus: Path) -> None:
    half = Filters.of(since="2021-06-30", until="2021-12-31")
    selection = half.resolve(service.indexed_files().values())
    found = service.retriever(10).search("le port", selection=selection)
    names = {Path(n.node.metadata["source"]).name for n in found.nodes}
    assert names == {"brest-2021.md", "morlaix-2021.md"}  # both end days are in
    assert all(n.node.metadata["date"] in ("2021-06-30", "2021-12-31") for n in found.nodes)


def test_a_question_answered_outside_the_filter_is_answered_inside_it_or_refused(
    service: RagService, corpus: Path
) -> None:
    unfiltered = service.ask(BREST_2023)
    assert any("4321" in c.quote for c in unfiltered.citations)
    for filters in [
        Filters.of(until="2022-12-31"),
        Filters.of(documents=["ouest/brest-2021.md", "ouest/quimper-2021.md"]),
        Filters.of(folder=str(corpus / "sud")),
    ]:
        allowed = {
            c.meta["source"] for c in service.store.all_chunks() if c.id in inside(service, filters)
        }
        answer = service.ask(BREST_2023, filters=filters)
        quoted = answer.citations + answer.closest
        assert all(c.source in allowed for c in quoted), (filters, quoted)
        assert not any("4321" in c.quote for c in quoted)
    # The 2021 figure is the answer once 2023 is filtered out.
    earlier = service.ask(BREST_2023, filters=Filters.of(until="2022-12-31"))
    assert earlier.abstained or any("2950" in c.quote for c in earlier.citations)


def test_a_bm25_only_word_is_never_cited_from_outside_the_filter(service: RagService) -> None:
    question = f"Où pousse le {RARE_WORD} ?"
    assert any(RARE_WORD in c.quote for c in service.ask(question).citations)
    answer = service.ask(question, filters=Filters.of(folder="ouest"))
    assert not any(RARE_WORD in c.quote for c in answer.citations + answer.closest)
    assert all("/ouest/" in c.source for c in answer.citations + answer.closest)


def test_filters_naming_nothing_indexed_are_clear_errors(service: RagService) -> None:
    with pytest.raises(FilterError, match="no indexed document matches"):
        service.ask(BREST_2023, filters=Filters.of(documents=["absent.md"]))
    with pytest.raises(FilterError, match="folder"):
        service.ask(BREST_2023, filters=Filters.of(folder="/nowhere"))


def test_cli_filters_and_bad_dates(service: RagService, corpus: Path) -> None:
    data = service.settings.data_dir
    bad = run_cli("ask", BREST_2023, "--since", "2023-02-30", data_dir=data)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "error: since: '2023-02-30' is not a date (use YYYY-MM-DD)\n"
    reversed_range = run_cli(
        "ask", BREST_2023, "--since", "2023-01-01", "--until", "2022-01-01", data_dir=data
    )
    assert reversed_range.returncode == 2 and "after until" in reversed_range.stderr
    doc = next(r for r in service.indexed_files().values() if r.source.endswith("brest-2021.md"))
    done = run_cli("ask", BREST_2023, "--doc", doc.id, "--json", data_dir=data)
    assert done.returncode == 0, done.stderr
    cites = json.loads(done.stdout)["citations"]
    assert cites and {c["document_id"] for c in cites} == {doc.id}
    assert {c["date"] for c in cites} == {"2021-06-30"}
    text = run_cli("ask", BREST_2023, "--since", "2023-01-01", data_dir=data)
    assert text.returncode == 0, text.stderr
    assert "  [1] 2023-06-30 ouest/brest-2023.md:" in text.stdout


def test_api_filters_on_ask_and_chat_completions(service: RagService) -> None:
    from tests.system.test_api import rag_serve

    with rag_serve(service.settings.data_dir) as url:
        for path, body in [
            ("/v1/ask", {"question": BREST_2023}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": BREST_2023}]}),
        ]:
            for filters, message in [
                ({"since": "2023-13-01"}, "since: '2023-13-01' is not a date (use YYYY-MM-DD)"),
                ({"documents": "absent.md"}, "no indexed document matches 'absent.md'"),
                ({"sinse": "2023-01-01"}, "Invalid request: filters.sinse"),
            ]:
                got = httpx.post(url + path, json={**body, "filters": filters}, timeout=120)
                assert got.status_code == 400, got.text
                assert got.json()["error"]["message"].startswith(message), got.text
            good = {**body, "filters": {"until": "2022-12-31", "folder": "ouest"}}
            got = httpx.post(url + path, json=good, timeout=120)
            assert got.status_code == 200, got.text
            reply = got.json()
            cites = reply["citations"] if "citations" in reply else reply["choices"][0]["message"]
            cites = cites["citations"] if isinstance(cites, dict) else cites
            assert cites and all(c["source"].startswith("ouest/") for c in cites)
            assert not any("4321" in c["quote"] for c in cites)
