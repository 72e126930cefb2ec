"""A document's own date, read from each format's metadata, and the filters' rules over it.

Files are built here with the real libraries (python-docx, odfpy, pypdf) so the metadata is
where those tools write it.
"""

from __future__ import annotations

import datetime
import io

import docx
import pytest
from odf.meta import CreationDate
from odf.opendocument import OpenDocumentText
from odf.text import P
from pypdf import PdfWriter

from rag.documents.dates import date_int, day, document_date
from rag.index.records import FileRecord
from rag.retrieval.filters import FilterError, Filters, Selection


def test_word_and_opendocument_dates_come_from_their_core_properties() -> None:
    word = docx.Document()
    word.add_paragraph("Le texte.")
    word.core_properties.created = datetime.datetime(2023, 4, 5, 10, 0)
    out = io.BytesIO()
    word.save(out)
    assert document_date(".docx", out.getvalue()) == "2023-04-05"
    odt = OpenDocumentText()
    odt.text.addElement(P(text="Le texte."))
    odt.meta.addElement(CreationDate(text="2022-02-03T10:00:00"))
    out = io.BytesIO()
    odt.write(out)
    assert document_date(".odt", out.getvalue()) == "2022-02-03"


def test_pdf_date_comes_from_its_info_dictionary() -> None:
    writer = PdfWriter()
    writer.add_blank_page(100, 100)
    writer.add_metadata({"/CreationDate": "D:20210708120000+01'00'"})
    out = io.BytesIO()
    writer.write(out)
    assert document_date(".pdf", out.getvalue()) == "2021-07-08"


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            '<meta property="article:published_time" content="2020-01-02T08:00:00+01:00">',
            "2020-01-02",
        ),
        ('<meta name="DC.date" content="2018-05-06">', "2018-05-06"),
        ('<article><time datetime="2019-11-12">12 novembre</time></article>', "2019-11-12"),
        # A date in the text is not the page's date: the file's time dates it instead.
        ("<p>Publié le 2016-03-03, mis à jour.</p>", None),
    ],
)
def test_html_date_comes_from_meta_or_time_markup_only(html: str, expected: str | None) -> None:
    page = f"<html><head></head><body>{html}<p>Le texte.</p></body></html>"
    assert document_date(".html", page.encode()) == expected


def test_markdown_date_comes_from_its_front_matter_only() -> None:
    front = b"---\ntitle: Note\ndate: 2017-08-09\n---\n# Note\n"
    assert document_date(".md", front) == "2017-08-09"
    assert document_date(".md", b"# Note\ndate: 2017-08-09\n") is None


def test_unreadable_metadata_costs_nothing_and_bad_days_are_not_dates() -> None:
    assert document_date(".pdf", b"%PDF-1.4 not really") is None
    assert document_date(".docx", b"not a zip") is None
    assert document_date(".txt", b"2020-01-01") is None
    assert day("2023-02-30") is None and day("2024-02-29T10:00Z") == "2024-02-29"
    assert date_int("2024-02-29") == 20240229


def test_bad_filter_dates_are_clear_errors() -> None:
    for bad in ("2024-13-01", "2024-02-30", "yesterday", "2024-2-3", "20240203"):
        with pytest.raises(FilterError, match="not a date"):
            Filters.of(since=bad)
    with pytest.raises(FilterError, match="after"):
        Filters.of(since="2024-03-02", until="2024-03-01")
    assert Filters.of(documents=["", " "], since=" ", folder="") is None


def test_where_and_admits_agree_on_inclusive_ranges_and_unknown_dates() -> None:
    records = [
        FileRecord("/corpus/a/one.txt", "1" * 64, 1, "One"),
        FileRecord("/corpus/b/two.txt", "2" * 64, 1, "Two"),
    ]
    chosen = Filters.of(
        documents=[records[0].id, "b/two.txt"], since="2024-01-01", until="2024-01-31"
    )
    selection = chosen.resolve(records)
    assert selection.sources == {"/corpus/a/one.txt", "/corpus/b/two.txt"}
    assert selection.where() == {
        "$and": [
            {"source": {"$in": ["/corpus/a/one.txt", "/corpus/b/two.txt"]}},
            {"date_int": {"$gte": 20240101}},
            {"date_int": {"$lte": 20240131}},
        ]
    }
    inside = {"source": "/corpus/a/one.txt"}
    assert selection.admits({**inside, "date_int": 20240101})  # both ends are inside
    assert selection.admits({**inside, "date_int": 20240131})
    assert not selection.admits({**inside, "date_int": 20240201})
    assert not selection.admits(inside)  # no date: outside any date range
    assert Filters.of(folder="/corpus/a").resolve(records).sources == {"/corpus/a/one.txt"}
    assert Selection().where() is None and Selection().admits({})
    with pytest.raises(FilterError, match=r"no indexed document matches 'nothing\.txt'"):
        Filters.of(documents=["nothing.txt"]).resolve(records)
    with pytest.raises(FilterError, match="folder"):
        Filters.of(folder="/elsewhere").resolve(records)
