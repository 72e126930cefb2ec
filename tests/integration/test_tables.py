"""Table rows read with their header: Word, OpenDocument, HTML and Markdown tables built here
with the real libraries, ingested, and asked about. A row alone ("Ornans | 18 400") does not
say what its numbers are; its sentence is stored and embedded labelled by the header row, while
its citation quotes the row as written, at its offsets in the text the citation points into."""

from __future__ import annotations

import io
from pathlib import Path

import docx
import pytest
from odf.opendocument import OpenDocumentText
from odf.table import Table, TableCell, TableColumn, TableRow
from odf.text import P

from rag.documents.formats import extract, markdown_table_rows
from rag.service import RagService
from tests.conftest import make_settings

QUESTION = "Combien de meules par an produit la fromagerie d'Ornans ?"
INTRO = (
    "Le comté est affiné dans les caves du massif du Jura pendant au moins quatre mois. "
    "Chaque fromagerie collecte le lait des fermes voisines deux fois par jour."
)
OUTRO = "Les chiffres de production sont publiés chaque printemps par l'interprofession."
HEADER = ("Fromagerie", "Village voisin", "Meules par an")
ROWS = [
    ("Ornans", "Montgesoye", "18 400"),
    ("Poligny", "Barretaine", "9 100"),
    ("Mouthe", "Chapelle-des-Bois", "12 700"),
    ("Levier", "Villers-sous-Chalamont", "7 300"),
]
ORNANS_ROW = "Ornans | Montgesoye | 18 400"
ORNANS_LABELLED = "Fromagerie: Ornans; Village voisin: Montgesoye; Meules par an: 18 400"


def word_file() -> bytes:
    document = docx.Document()
    document.add_heading("La filière comté", level=1)
    document.add_paragraph(INTRO)
    table = document.add_table(rows=len(ROWS) + 1, cols=len(HEADER))
    for i, row in enumerate([HEADER, *ROWS]):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
    document.add_paragraph(OUTRO)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def odt_file() -> bytes:
    document = OpenDocumentText()
    document.text.addElement(P(text=INTRO))
    table = Table()
    table.addElement(TableColumn(numbercolumnsrepeated=len(HEADER)))
    for row in [HEADER, *ROWS]:
        cells = TableRow()
        for value in row:
            cell = TableCell()
            cell.addElement(P(text=value))
            cells.addElement(cell)
        table.addElement(cells)
    document.text.addElement(table)
    document.text.addElement(P(text=OUTRO))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def html_file() -> bytes:
    head = "".join(f"<th>{cell}</th>" for cell in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in ROWS)
    return (
        "<html><head><title>La filière comté</title></head><body>"
        "<nav>Accueil | Rubriques</nav><article><h1>La filière comté</h1>"
        f"<p>{INTRO}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>{OUTRO}</p></article><footer>Tous droits réservés</footer></body></html>"
    ).encode()


def markdown_file() -> bytes:
    lines = [f"| {' | '.join(HEADER)} |", "|---|---|--:|"]
    lines += [f"| {' | '.join(row)} |" for row in ROWS]
    return f"# La filière comté\n\n{INTRO}\n\n" + "\n".join(lines) + f"\n\n{OUTRO}\n"


FILES = {
    "comte.docx": word_file,
    "comte.odt": odt_file,
    "comte.html": html_file,
    "comte.md": lambda: markdown_file().encode(),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_body_row_is_labelled_by_the_header_at_its_own_span(name: str) -> None:
    (part,), _ = extract(Path(name).suffix, FILES[name]())
    labelled = [row.labelled for row in part.rows]
    assert len(labelled) == len(ROWS), part.rows
    assert ORNANS_LABELLED in labelled
    ornans = part.rows[labelled.index(ORNANS_LABELLED)]
    assert part.text[ornans.start : ornans.end].strip("| ") == ORNANS_ROW


def test_markdown_tables_need_a_delimiter_row() -> None:
    text = "Prix | Quantité\nUne ligne | sans tableau.\n\n| a | b |\n|:-|-:|\n| 1 | |\n"
    (row,) = markdown_table_rows(text)
    assert text[row.start : row.end] == "| 1 | |"
    assert row.labelled == "a: 1"  # an empty cell is left out


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_row_answers_with_its_own_text_cited(name: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / name).write_bytes(FILES[name]())
    service = RagService(make_settings(tmp_path / "data"))
    report = service.ingest([corpus], show_progress=False)
    assert report.added == 1, report
    answer = service.ask(QUESTION)
    assert not answer.abstained, answer
    best = answer.citations[0]
    assert "Ornans" in best.quote and "18 400" in best.quote, answer
    assert best.quote.strip("| ") == ORNANS_ROW  # the row as written, not its labelled form
    cited = Path(best.extracted or best.source).read_text(encoding="utf-8")
    assert cited[best.start : best.end] == best.quote


def test_an_html_table_without_header_cells_is_headed_by_its_first_row() -> None:
    plain = html_file().decode().replace("<th>", "<td>").replace("</th>", "</td>")
    (part,), _ = extract(".html", plain.replace("<thead>", "").replace("</thead>", "").encode())
    assert "|---" not in part.text  # trafilatura writes no delimiter row here
    assert ORNANS_LABELLED in [row.labelled for row in part.rows]
