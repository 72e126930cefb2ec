"""PDF, HTML and Markdown: citations point into the text that was indexed, with page/section."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.service import RagService
from tests.conftest import cited, make_settings


def tiny_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (no PDF library needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        content_id = len(objects) + 1
        objects.append(
            f"<< /Length {len(stream)} >>\nstream\n{stream.decode('latin-1')}\nendstream"
        )
        kids.append(len(objects) + 1)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Contents {content_id} 0 R /Resources << /Font << /F1 FONT 0 R >> >> >>"
        )
    font_id = len(objects) + 1
    objects.append(
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    objects[1] = (
        f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body.replace('FONT', str(font_id))}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


HTML = """<!doctype html><html><head><title>Le port de Brest</title></head><body>
<nav><a href="/">Accueil</a> | <a href="/meteo">Météo</a> | <a href="/contact">Contact</a></nav>
<article><h1>Le port de Brest en 2023</h1>
<p>Le port de Brest a accueilli exactement 4321 navires de pêche au cours de l'année 2023,
un record depuis la création du registre portuaire.</p>
<p>La capitainerie attribue cette hausse à la modernisation des quais et à l'ouverture
d'une nouvelle criée au printemps.</p></article>
<footer>© 2024 Journal du Finistère. Tous droits réservés.</footer></body></html>"""

MARKDOWN = """# Rapport annuel de la coopérative

## Production

La coopérative a produit 812 tonnes de pommes en 2022.

## Personnel

La coopérative emploie 37 saisonniers pendant la récolte.
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> RagService:
    corpus = tmp_path_factory.mktemp("formats")
    (corpus / "report.pdf").write_bytes(
        tiny_pdf(
            [
                "Sommaire du rapport sur les phares bretons.",
                "Le phare du Creac'h mesure 55 metres de haut et date de 1863.",
            ]
        )
    )
    (corpus / "brest.html").write_text(HTML, encoding="utf-8")
    (corpus / "coop.md").write_text(MARKDOWN, encoding="utf-8")
    (corpus / "locked.pdf").write_bytes(b"%PDF-1.4\ngarbage that is not a pdf")
    service = RagService(make_settings(tmp_path_factory.mktemp("formats-data")))
    report = service.ingest([corpus], show_progress=False)
    assert report.added == 3, report
    assert [Path(p).name for p, _ in report.failed] == ["locked.pdf"]
    assert "PDF" in report.failed[0][1]
    return service


def test_pdf_citation_names_the_page_and_matches_the_stored_text(service: RagService) -> None:
    cite = cited(service, "Quelle est la hauteur du phare du Creac'h ?", "55 metres")
    assert Path(cite.source).name == "report.pdf"
    assert cite.page == 2
    stored = Path(cite.extracted).read_text(encoding="utf-8")
    assert stored[cite.start : cite.end] == cite.quote
    assert cite.to_json()["page"] == 2


def test_html_citation_quotes_the_extracted_main_text(service: RagService) -> None:
    cite = cited(
        service, "How many fishing boats did the port of Brest receive in 2023?", "4321 navires"
    )
    assert Path(cite.source).name == "brest.html"
    assert cite.page is None
    stored = Path(cite.extracted).read_text(encoding="utf-8")
    assert stored[cite.start : cite.end] == cite.quote
    assert "Accueil" not in stored and "droits réservés" not in stored


def test_markdown_citation_names_its_section(service: RagService) -> None:
    cite = cited(
        service, "Combien de saisonniers la coopérative emploie-t-elle ?", "37 saisonniers"
    )
    assert cite.section == "Personnel"
    assert cite.extracted is None
    text = Path(cite.source).read_text(encoding="utf-8")
    assert text[cite.start : cite.end] == cite.quote


def _mixed_corpus(folder: Path) -> Path:
    """One file of each supported kind, each holding one distinct fact."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("Notes\nLe moulin de Kerbrat a été restauré en 1998.\n")
    (folder / "coop.md").write_text(MARKDOWN, encoding="utf-8")
    (folder / "report.pdf").write_bytes(tiny_pdf(["Le phare du Creac'h date de 1863."]))
    (folder / "brest.html").write_text(HTML, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            ImportError("lxml.html.clean module is now a separate project lxml_html_clean"),
            "missing dependency (ImportError: lxml.html.clean module is now a separate "
            "project lxml_html_clean)",
        ),
        (ModuleNotFoundError("No module named 'justext'", name="justext"), "pip install justext"),
        (RuntimeError("parser exploded\nwith a second line"), "RuntimeError: parser exploded"),
    ],
)
def test_a_crashing_extractor_costs_its_file_not_the_run(
    tmp_path: Path, monkeypatch, capsys, error: Exception, reason: str
) -> None:
    """An exception from a format library is one `failed:` line; the other files are indexed."""
    from rag import cli
    from rag.documents import formats

    def broken(_html: str) -> str:
        raise error

    monkeypatch.setattr(formats, "_html_main_text", broken)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RAG_CHROMA_URL", raising=False)
    cli.get_settings.cache_clear()
    try:
        status = cli.main(["ingest", str(_mixed_corpus(tmp_path / "corpus"))])
    finally:
        cli.get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert status == 0
    assert "3 added" in out and "1 failed" in out
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    html = tmp_path / "corpus" / "brest.html"
    assert len(failed) == 1 and failed[0].startswith(f"failed: {html}: ")
    assert reason in failed[0]
    assert "Traceback" not in err


def test_a_crashing_extractor_fails_only_that_upload(tmp_path: Path, monkeypatch) -> None:
    """The chat's upload goes through the same per-file guard."""
    from rag.documents import formats

    def broken(_html: str) -> str:
        raise ValueError("bad markup")

    monkeypatch.setattr(formats, "_html_main_text", broken)
    service = RagService(make_settings(tmp_path / "data"))
    report = service.add_uploads(
        [("page.html", HTML.encode()), ("notes.txt", b"Notes\nLe moulin date de 1998.\n")]
    )
    assert report.added == 1
    assert [(Path(p).name, r) for p, r in report.failed] == [
        ("page.html", "cannot extract text (ValueError: bad markup)")
    ]


def test_declared_dependencies_are_consistent() -> None:
    """`pip check`: every package the project pulls in has what it declares it needs."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
