"""The documents list and removal, and failed uploads (real Chroma, real embedder, real BM25).

After a document is removed no path returns any of its text: not the dense arms, not BM25 on
a word only it holds, not ``document_text`` (the viewer, ``GET /v1/documents/{id}``), not
the CLI; its extracted text and uploaded file are gone, and re-indexing the folders does not
bring it back unless its file is still there.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from rag.accounts.users import Accounts
from rag.retrieval.filters import FilterError, Filters
from rag.service import DocumentError, RagService
from tests.conftest import make_settings, run_cli
from tests.integration.test_formats import HTML, tiny_pdf

UNIQUE = "quokkarama"
OTHER = "kwazibou"
LIGHTHOUSE = "Combien mesure le phare du Creac'h ?"
LIGHTHOUSE_PDF = tiny_pdf(
    [
        "Sommaire du rapport sur les phares bretons.",
        f"Le phare du Creac'h mesure 55 metres de haut et abrite le {UNIQUE} de Ouessant.",
    ]
)
NOTE = (
    "---\ndate: 2024-02-29\n---\n# Les marais de Guérande\n\nLes marais de Guérande "
    "produisent 15000 tonnes de sel chaque année.\n"
)
PASSWORD = "correct horse battery"


@pytest.fixture
def service(tmp_path: Path) -> RagService:
    """A folder (an HTML page, a dated Markdown note) indexed, and a PDF uploaded by alice."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "brest.html").write_text(HTML, encoding="utf-8")
    (corpus / "sel.md").write_text(NOTE, encoding="utf-8")
    service = RagService(make_settings(tmp_path / "data"))
    service.ingest([corpus], show_progress=False)
    report = service.add_uploads([("phares.pdf", LIGHTHOUSE_PDF)], added_by="alice")
    assert report.added == 1 and not report.failed, report
    return service


def by_name(service: RagService) -> dict[str, dict]:
    return {Path(r.source).name: r.to_json() for r in service.documents()}


def test_the_list_says_title_date_type_size_chunks_and_who_added_what(
    service: RagService,
) -> None:
    listed = by_name(service)
    assert set(listed) == {"brest.html", "sel.md", "phares.pdf"}
    pdf, note, page = listed["phares.pdf"], listed["sel.md"], listed["brest.html"]
    assert (pdf["type"], pdf["size"], pdf["added_by"]) == ("pdf", len(LIGHTHOUSE_PDF), "alice")
    assert pdf["title"] == "Sommaire du rapport sur les phares bretons."
    assert pdf["chunks"] >= 1 and pdf["added_at"].endswith("+00:00")
    assert (note["title"], note["date"], note["added_by"]) == (
        "Les marais de Guérande",
        "2024-02-29",
        "",
    )
    assert page["type"] == "html" and page["date"] and page["size"] == len(HTML.encode())
    assert pdf["source"] == "phares.pdf"  # relative to the uploads folder: no server path
    chunk = next(c for c in service.store.all_chunks() if c.meta.get("path") == "phares.pdf")
    assert chunk.meta["added_by"] == "alice"

    data = service.settings.data_dir
    lines = run_cli("documents", "list", "--json", data_dir=data)
    assert lines.returncode == 0, lines.stderr
    assert [json.loads(line) for line in lines.stdout.splitlines()] == [
        r.to_json() for r in service.documents()
    ]
    table = run_cli("docs", "list", data_dir=data)
    row = next(line for line in table.stdout.splitlines() if "phares.pdf" in line).split("\t")
    assert row[0] == pdf["id"] and row[2] == "pdf" and row[5].startswith("alice ")


def texts_holding(service: RagService, word: str) -> list[str]:
    """Every stored chunk or sentence text holding ``word``, and BM25's hits for it."""
    stored = [r.text for r in [*service.store.all_chunks(), *service.store.all_sentences()]]
    return [t for t in stored if word in t] + service.retriever().lexical_search(word).ids


def test_a_removed_upload_leaves_no_text_anywhere(service: RagService) -> None:
    pdf = next(r for r in service.documents() if r.source.endswith("phares.pdf"))
    ref = next(r for r in service.document_refs() if "page-00002" in r)
    assert service.document_text(ref) and texts_holding(service, UNIQUE)
    assert any(UNIQUE in c.quote for c in service.ask(LIGHTHOUSE).citations)

    removed = run_cli("documents", "remove", pdf.id, data_dir=service.settings.data_dir)
    assert removed.returncode == 0, removed.stderr
    fresh = RagService(service.settings)  # another process removed it: this one sees it
    assert pdf.source not in fresh.indexed_files() and not fresh.is_indexed(pdf.source)
    assert texts_holding(fresh, UNIQUE) == []  # chunks, sentences, BM25
    assert fresh.document_text(ref) is None and ref not in fresh.document_refs()
    assert not Path(pdf.source).exists() and not Path(ref).parent.exists()
    for question in (f"Où vit le {UNIQUE} ?", LIGHTHOUSE):
        answer = fresh.ask(question)
        assert all(c.source != pdf.source for c in answer.citations + answer.closest)
    # Re-indexing the folders (the page's "Re-index documents") does not bring it back.
    fresh.ingest([fresh.upload_dir], prune=True, show_progress=False)
    assert pdf.source not in fresh.indexed_files()
    with pytest.raises(DocumentError, match="no indexed document matches"):
        fresh.remove_document(pdf.id)
    gone = run_cli("documents", "remove", pdf.id, data_dir=service.settings.data_dir)
    assert gone.returncode == 2 and gone.stderr.startswith("error: no indexed document matches")


def test_a_removed_folder_file_comes_back_only_while_it_is_there(service: RagService) -> None:
    note = service.remove_document("sel.md")  # a path's tail names it, as citations do
    assert texts_holding(service, "Guérande") == [] and not service.is_indexed(note.source)
    folder = Path(note.source).parent
    assert Path(note.source).exists()  # a folder's file is the user's: never deleted
    service.ingest([folder], show_progress=False)
    assert service.is_indexed(note.source)  # still there: indexed again
    service.remove_document(note.id)
    Path(note.source).unlink()
    service.ingest([folder], prune=True, show_progress=False)
    assert not service.is_indexed(note.source)
    with pytest.raises(FilterError, match="no indexed document matches"):
        service.ask("Combien de sel ?", filters=Filters.of(documents=[note.id]))


def test_a_failed_upload_leaves_nothing_on_disk(service: RagService) -> None:
    before = sorted(p.name for p in service.upload_dir.iterdir())
    report = service.add_uploads(
        [("casse.pdf", b"%PDF-1.4\nnot really a pdf"), ("vide.txt", b"  \n")], added_by="bob"
    )
    assert sorted(Path(name).name for name, _ in report.failed) == ["casse.pdf", "vide.txt"]
    assert sorted(p.name for p in service.upload_dir.iterdir()) == before
    again = service.ingest([service.upload_dir], prune=True, show_progress=False)
    assert again.failed == []  # nothing left to be reported on every re-index


def test_api_lists_and_deletes_documents_for_editors(service: RagService, tmp_path: Path) -> None:
    from tests.system.test_api import rag_serve

    accounts = Accounts(service.settings)
    keys = {}
    for role in ("reader", "editor"):
        accounts.add(role, PASSWORD, role)
        keys[role] = {"Authorization": f"Bearer {accounts.new_key(role)}"}
    with rag_serve(service.settings.data_dir) as url:
        listed = httpx.get(f"{url}/v1/documents", headers=keys["reader"], timeout=60).json()
        assert listed["data"] == [r.to_json() for r in service.documents()]
        extra = tmp_path / "ouessant.txt"
        extra.write_text(f"Ouessant\nLe {OTHER} vit aussi à Ouessant.\n", encoding="utf-8")
        files = {"file": ("ouessant.txt", extra.read_bytes(), "text/plain")}
        up = httpx.post(f"{url}/v1/documents", files=files, headers=keys["editor"], timeout=120)
        assert up.status_code == 200 and up.json()["added"] == 1, up.text
        entry = next(d for d in by_name(service).values() if d["title"] == "Ouessant")
        assert entry["added_by"] == "editor"
        doc = f"{url}/v1/documents/{entry['id']}"
        assert httpx.get(doc, headers=keys["reader"], timeout=60).status_code == 200
        denied = httpx.delete(doc, headers=keys["reader"], timeout=60)
        assert denied.status_code == 403
        done = httpx.delete(doc, headers=keys["editor"], timeout=60)
        assert done.status_code == 200 and done.json()["deleted"] is True, done.text
        for method in (httpx.get, httpx.delete):
            assert method(doc, headers=keys["editor"], timeout=60).status_code == 404
        asked = {"question": f"Où vit le {OTHER} ?"}
        answer = httpx.post(f"{url}/v1/ask", json=asked, headers=keys["reader"], timeout=120)
        assert OTHER not in json.dumps(answer.json())
    assert not (service.upload_dir / "ouessant.txt").exists()


BREST = (
    "Rapport sur le port de Brest\n"
    "Le port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
)
BREST_QUESTION = "Combien de navires de pêche le port de Brest a-t-il accueillis en 2023 ?"


def test_the_page_filters_lists_and_removes_documents(tmp_path: Path, monkeypatch) -> None:
    """The real page (AppTest): an upload is listed with its date, a document filter keeps
    it out of an answer, and once removed its earlier quote says the document is gone."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from rag.config import get_settings
    from rag.ui.page import REMOVED_NOTICE
    from rag.ui.render import escape_md
    from tests.conftest import ROOT

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()  # the app's service is cached per process, with old settings
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=300).run()
    at.sidebar.file_uploader[0].set_value(("brest.txt", BREST.encode(), "text/plain")).run()
    assert not at.exception, at.exception
    service = RagService(get_settings())
    brest = next(r for r in service.documents() if r.source.endswith("brest.txt"))
    listed = [md.value for md in at.sidebar.expander[1].markdown]
    assert any("Rapport sur le port de Brest" in line and "TXT" in line for line in listed)

    seed = next(r for r in service.documents() if r.id != brest.id)
    at.sidebar.multiselect[0].set_value([seed.id]).run()
    at.chat_input[0].set_value(BREST_QUESTION).run()
    assert "4321" not in "\n".join(h.proto.body for h in at.html)
    at.sidebar.multiselect[0].set_value([]).run()
    at.chat_input[0].set_value(BREST_QUESTION).run()
    assert "4321 navires" in "\n".join(h.proto.body for h in at.html)
    today = brest.date  # a plain text file is dated by its modification time
    assert any(escape_md(f"line 2 · dated {today}") in md.value for md in at.markdown)

    at.button(key=f"remove-doc-{brest.id}").click().run()
    at.button(key=f"remove-doc-{brest.id}-yes").click().run()
    assert not at.exception, at.exception
    assert not RagService(get_settings()).is_indexed(brest.source)
    assert any(REMOVED_NOTICE in w.value for w in at.warning)
    assert not Path(brest.source).exists()
    get_settings.cache_clear()
    st.cache_resource.clear()


def test_on_the_page_editors_upload_as_themselves_and_readers_cannot_remove(
    tmp_path: Path, monkeypatch
) -> None:
    """With accounts: an editor's upload is listed as theirs; a reader sees the list with
    no Remove button."""
    import streamlit as st

    from rag.config import get_settings
    from tests.integration.test_signin import sign_in, signed_out

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()  # the app's service is cached per process, with old settings
    accounts = Accounts(get_settings())
    accounts.add("rita", PASSWORD, "reader")
    accounts.add("ed", PASSWORD, "editor")
    try:
        ed = sign_in(signed_out(), "ed")
        ed.sidebar.file_uploader[0].set_value(("brest.txt", BREST.encode(), "text/plain")).run()
        assert not ed.exception, ed.exception
        brest = next(r for r in RagService(get_settings()).documents() if "Brest" in r.title)
        assert brest.added_by == "ed"
        assert ed.button(key=f"remove-doc-{brest.id}")
        rita = sign_in(signed_out(), "rita")
        listed = "\n".join(md.value for e in rita.sidebar.expander for md in e.markdown)
        assert "added by ed on" in listed
        assert not [b for b in rita.sidebar.button if (b.key or "").startswith("remove-doc-")]
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
