"""Word, OpenDocument and scanned PDF files, built here with the real libraries, then ingested
and asked about: each citation quotes the stored extracted text at its offsets and names its
section (Word/ODT headings) or page (scans, marked as OCR'd)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import docx
import pytest
from odf.opendocument import OpenDocumentText
from odf.table import Table, TableCell, TableColumn, TableRow
from odf.text import H, P
from PIL import Image, ImageDraw, ImageFont

from rag.documents.formats import NEEDS_OCR, extract, tesseract_available
from rag.service import RagService
from tests.conftest import cited, make_settings, run_cli

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
needs_ocr = pytest.mark.skipif(
    not (tesseract_available() and FONT.exists()),
    reason="needs tesseract-ocr (with fra) and fonts-dejavu-core (installed by .ci/run)",
)


def word_file() -> bytes:
    document = docx.Document()
    document.add_heading("Rapport sur les ponts de la Seine", level=1)
    document.add_paragraph("Ce rapport décrit les grands ouvrages de l'estuaire.")
    document.add_heading("Le pont de Normandie", level=2)
    document.add_paragraph(
        "Le pont de Normandie mesure 2143 mètres de long. Il a été inauguré en 1995."
    )
    document.add_heading("Tableau des ouvrages", level=2)
    table = document.add_table(rows=3, cols=3)
    rows = [
        ("Pont", "Longueur", "Mise en service"),
        ("Tancarville", "1420 mètres", "1959"),
        ("Brotonne", "1278 mètres", "1977"),
    ]
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def odt_file() -> bytes:
    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Les marais salants"))
    document.text.addElement(P(text="Le sel est récolté à la main par les paludiers."))
    document.text.addElement(H(outlinelevel=2, text="Production"))
    document.text.addElement(
        P(text="Les marais de Guérande produisent 15000 tonnes de sel chaque année.")
    )
    table = Table()
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for row in (("Site", "Tonnes"), ("Noirmoutier", "3000")):
        cells = TableRow()
        for value in row:
            cell = TableCell()
            cell.addElement(P(text=value))
            cells.addElement(cell)
        table.addElement(cells)
    document.text.addElement(table)
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def scanned_pdf(pages: list[str]) -> bytes:
    """An image-only PDF: each page's text drawn on an A4 bitmap at 300 dpi, no text layer."""
    font = ImageFont.truetype(str(FONT), 40)
    images = []
    for text in pages:
        image = Image.new("L", (2480, 3508), 255)
        ImageDraw.Draw(image).multiline_text((200, 300), text, font=font, fill=0, spacing=20)
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=300, save_all=True, append_images=images[1:])
    return out.getvalue()


SCAN_PAGES = [
    "Sommaire du dossier sur les phares bretons.",
    "Le phare d'Eckmühl mesure 65 mètres de haut.\nIl a été allumé en 1897.",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("documents")
    (folder / "ponts.docx").write_bytes(word_file())
    (folder / "sel.odt").write_bytes(odt_file())
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    if tesseract_available() and FONT.exists():
        (folder / "phares.pdf").write_bytes(scanned_pdf(SCAN_PAGES))
    return folder


@pytest.fixture(scope="module")
def service(corpus: Path, tmp_path_factory) -> RagService:
    service = RagService(make_settings(tmp_path_factory.mktemp("documents-data")))
    report = service.ingest([corpus], show_progress=False)
    assert report.added == len(list(corpus.iterdir())) - 1, report
    assert [(Path(p).name, "Word" in why) for p, why in report.failed] == [("broken.docx", True)]
    return service


def _cite(service: RagService, question: str, needle: str):
    cite = cited(service, question, needle)
    stored = Path(cite.extracted).read_text(encoding="utf-8")
    assert stored[cite.start : cite.end] == cite.quote
    return cite, stored


def test_word_citation_names_its_heading_and_quotes_the_extracted_text(
    service: RagService,
) -> None:
    cite, stored = _cite(service, "Quelle est la longueur du pont de Normandie ?", "2143 mètres")
    assert Path(cite.source).name == "ponts.docx"
    assert cite.section == "Le pont de Normandie"
    assert cite.page is None and not cite.ocr
    assert "Tancarville | 1420 mètres | 1959" in stored.splitlines()


def test_word_table_rows_are_cited_as_rows(service: RagService) -> None:
    cite, _ = _cite(service, "Quelle est la longueur du pont de Brotonne ?", "1278")
    assert cite.quote == "Brotonne | 1278 mètres | 1977"
    assert cite.section == "Tableau des ouvrages"


def test_odt_citation_names_its_heading(service: RagService) -> None:
    cite, stored = _cite(
        service, "Combien de tonnes de sel les marais de Guérande produisent-ils ?", "15000"
    )
    assert Path(cite.source).name == "sel.odt"
    assert cite.section == "Production"
    assert "Noirmoutier | 3000" in stored.splitlines()


@needs_ocr
def test_scanned_pdf_is_read_by_ocr_and_cited_by_page(service: RagService) -> None:
    cite, _ = _cite(service, "Quelle est la hauteur du phare d'Eckmühl ?", "65 mètres")
    assert Path(cite.source).name == "phares.pdf"
    assert cite.page == 2
    assert cite.ocr and cite.to_json()["ocr"] is True


@needs_ocr
def test_ask_json_shows_the_ocr_flag(service: RagService) -> None:
    run = run_cli(
        "ask",
        "--json",
        "Quelle est la hauteur du phare d'Eckmühl ?",
        data_dir=service.settings.data_dir,
    )
    assert run.returncode == 0, run.stderr
    cites = json.loads(run.stdout)["citations"]
    assert any(c["ocr"] and c["page"] == 2 and "65 mètres" in c["quote"] for c in cites), cites


def test_reingest_does_not_extract_unchanged_files_again(service: RagService, corpus: Path) -> None:
    report = service.ingest([corpus], show_progress=False)
    assert report.chunks_embedded == 0
    assert report.unchanged == len(list(corpus.iterdir())) - 1


@pytest.mark.skipif(not FONT.exists(), reason="needs fonts-dejavu-core (installed by .ci/run)")
def test_without_tesseract_a_scan_is_reported_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "scan.pdf").write_bytes(scanned_pdf(SCAN_PAGES[:1]))
    # Only the Python interpreter (an absolute path) is reachable: no tesseract binary.
    env = {"PATH": str(tmp_path / "empty-bin")}
    run = run_cli("ingest", str(tmp_path / "scan.pdf"), data_dir=tmp_path / "data", env=env)
    assert run.returncode == 3, run.stderr
    assert f"failed: {(tmp_path / 'scan.pdf').resolve()}: {NEEDS_OCR}" in run.stderr
    assert "Traceback" not in run.stderr


def test_pages_with_a_text_layer_need_no_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    from tests.integration.test_formats import tiny_pdf

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    parts, _ = extract(".pdf", tiny_pdf(["Une page avec du texte."]))
    assert [(p.page, p.ocr) for p in parts] == [(1, False)]
