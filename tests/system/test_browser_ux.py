"""The chat page as a person uses it (issue 31): what only a real browser shows.

One ``streamlit run`` server on a fresh data dir (the seeds are indexed by the first
visit, as on a first start) that also holds a document full of web addresses.
"""

from __future__ import annotations

import re

import pytest

from rag.service import RagService
from rag.ui.render import VIEWER_MAX_PX
from tests.browser import browser_available, chromium_page, streamlit_app
from tests.conftest import make_settings

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]

WAIT_MS = 180_000
FIRST = "How many workers are in Kursk?"
SECOND = "Quel est le site de la mairie de Quimper, www.quimper.bzh ?"
LINKS_DOC = (
    "La mairie de Quimper en ligne\n"
    "Le site de la mairie de Quimper est https://www.quimper.bzh et son courriel "
    "contact@quimper.bzh, précise la ville.\n"
)
# The WCAG 2 contrast ratio of two sRGB colours, each blended over the first opaque
# background behind it, with every opacity on the way multiplied in.
CONTRASTS_JS = """
(selector) => {
  const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  return [...document.querySelectorAll(selector)].map((el) => {
    const text = el.querySelector('p') || el;
    const [r, g, b, a = 1] = rgba(getComputedStyle(text).color);
    let alpha = a, bg = null;
    for (let n = text; n; n = n.parentElement) {
      const style = getComputedStyle(n);
      alpha *= parseFloat(style.opacity);
      const c = rgba(style.backgroundColor);
      if (!bg && (c.length === 3 || c[3] === 1)) bg = c.slice(0, 3);
    }
    bg = bg || [255, 255, 255];
    const fg = [r, g, b].map((v, i) => v * alpha + bg[i] * (1 - alpha));
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    return [el.innerText.slice(0, 50), (hi + 0.05) / (lo + 0.05)];
  });
}
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page, after two questions typed at once, before the index had loaded."""
    data_dir = tmp_path_factory.mktemp("ux-data")
    corpus = tmp_path_factory.mktemp("links")
    (corpus / "quimper.txt").write_text(LINKS_DOC, encoding="utf-8")
    RagService(make_settings(data_dir)).ingest([corpus], show_progress=False)
    with streamlit_app(data_dir) as url, chromium_page() as page:
        page.goto(url)
        box = page.get_by_test_id("stChatInputTextArea")
        box.wait_for(timeout=WAIT_MS)
        for n, question in enumerate((FIRST, SECOND)):  # as a person types: one, then the next
            box.fill(question)
            box.press("Enter")
            page.locator("[data-testid=stChatMessage]").nth(n).wait_for(timeout=WAIT_MS)
        page.locator("[data-testid=stChatMessage]").nth(3).locator("p").first.wait_for(
            timeout=WAIT_MS
        )
        page.locator("mark.cite-hl").first.wait_for(timeout=WAIT_MS)
        yield page


def test_questions_typed_while_the_index_loads_are_kept_and_answered(page) -> None:
    """Defect 2: both questions stay on the page, in order, each with its answer."""
    messages = page.locator("[data-testid=stChatMessage]")
    texts = [messages.nth(i).inner_text() for i in range(messages.count())]
    assert len(texts) == 4, texts
    assert FIRST in texts[0] and "plus de mille" in texts[1]
    assert "quimper" in texts[2].lower() and "mairie de Quimper" in texts[3]


def test_the_uploader_states_the_real_limit(page) -> None:
    """Defect 1: the limit shown is RAG_MAX_FILE_MB's 20 MB, not Streamlit's 200 MB."""
    text = page.get_by_test_id("stFileUploaderDropzoneInstructions").inner_text()
    assert "20MB per file" in text and "200MB" not in text


def test_captions_meet_wcag_aa_contrast(page) -> None:
    """Defect 3: every caption (confidence, subtitle, corpus) at 4.5:1 or more."""
    ratios = [r for r in page.evaluate(CONTRASTS_JS, '[data-testid="stCaptionContainer"]') if r[0]]
    assert len(ratios) >= 3, ratios
    low = [(text, round(ratio, 2)) for text, ratio in ratios if ratio < 4.5]
    assert not low, low


def test_addresses_in_documents_and_questions_are_not_links(page) -> None:
    """Defect 4: no ``<a>`` in any message, though the quote and the question hold a URL,
    a www. address and an e-mail address."""
    messages = page.locator("[data-testid=stChatMessage]")
    assert "https://www.quimper.bzh" in messages.nth(3).inner_text().replace("\u2060", "")
    assert page.locator("[data-testid=stChatMessage] a").count() == 0


def test_the_answer_is_emphasised_and_french_quotes_are_marked_french(page) -> None:
    """Friction 7 and 15: the answering words in bold inside the quote, the French card
    ``lang="fr"`` on the English page, the digits shown beside it."""
    strong = page.locator("[data-testid=stChatMessage] mark.cite-hl strong").first
    assert strong.inner_text() == "plus de mille spécialistes"
    assert strong.evaluate("e => getComputedStyle(e).fontWeight") == "700"
    assert strong.evaluate("e => e.closest('[lang]').lang") == "fr"
    assert "more than 1,000" in page.locator(".cite-digits").first.inner_text()


def test_the_document_viewer_is_named_and_scrolled_to_the_quote(page) -> None:
    """Defect 5 and friction 15: st.iframe, titled for screen readers, the quote in view."""
    page.get_by_text("Show in document").first.click()
    frame = page.locator('iframe[title*="the whole document"]').first
    frame.wait_for(timeout=WAIT_MS)
    mark = page.frame_locator('iframe[title*="the whole document"]').first.locator("mark")
    mark.wait_for(timeout=WAIT_MS)
    assert "plus de mille spécialistes" in mark.inner_text()
    assert mark.evaluate("e => e.closest('[lang]').lang") == "fr"
    assert frame.evaluate("e => getComputedStyle(e).borderTopStyle") == "solid"


def test_the_viewer_has_a_header_and_opens_at_the_quoted_paragraph(page) -> None:
    """Friction 14: a header naming the document and the quote's paragraph ("paragraph N
    of M"); the text box opens at that paragraph's first line, and the frame is as tall as
    its content, the box stopping at ``VIEWER_MAX_PX`` (not a fixed 320 px)."""
    page.locator('iframe[title*="the whole document"]').first.wait_for(timeout=WAIT_MS)
    viewer = page.frame_locator('iframe[title*="the whole document"]').first
    head = viewer.locator(".doc-head").inner_text()
    assert ".txt" in head and re.search(r"paragraph (\d+) of (\d+)", head), head
    n, total = map(int, re.search(r"paragraph (\d+) of (\d+)", head).groups())
    assert 1 < n <= total
    box = viewer.locator("#doc")
    para = viewer.locator("#para")
    para.wait_for(timeout=WAIT_MS)
    offset = para.evaluate(
        "p => p.getBoundingClientRect().top - p.parentElement.getBoundingClientRect().top"
    )
    scrolled = box.evaluate("b => b.scrollHeight > b.clientHeight")
    assert (0 <= offset <= 10) if scrolled else offset >= 0, (offset, scrolled)
    assert box.evaluate("b => b.getBoundingClientRect().height") <= VIEWER_MAX_PX
    frame_height = page.locator('iframe[title*="the whole document"]').first.bounding_box()
    assert frame_height["height"] >= box.evaluate("b => b.getBoundingClientRect().height")


def test_lines_stay_readable_on_a_wide_screen(page) -> None:
    """Friction 14: at 2560 px the main column is capped (about 100 characters a line)."""
    page.set_viewport_size({"width": 2560, "height": 1200})
    page.wait_for_timeout(300)
    column = page.get_by_test_id("stMainBlockContainer")
    assert column.bounding_box()["width"] <= 52 * 16 + 1
    page.set_viewport_size({"width": 1280, "height": 900})


def test_messages_are_labelled_by_author_for_screen_readers(page) -> None:
    """Friction 15: each bubble starts with who wrote it, read but not shown."""
    first, second = (page.locator("[data-testid=stChatMessage]").nth(i) for i in (0, 1))
    assert first.locator(".sr-only").inner_text() == "You asked:"
    assert second.locator(".sr-only").inner_text() == "Answer:"
    box = second.locator(".sr-only").bounding_box()
    assert box["width"] <= 1 and box["height"] <= 1


def test_each_new_answer_is_announced_in_a_polite_live_region(page) -> None:
    """Friction 15: one region, made before any answer and kept outside Streamlit's
    elements, holds the newest answer's opening, read but not shown."""
    region = page.locator("[aria-live=polite]#rag-live")
    assert region.count() == 1
    page.wait_for_function(
        "() => document.getElementById('rag-live').textContent.includes('mairie de Quimper')",
        timeout=30_000,
    )
    assert region.inner_text().startswith("Answer: ")
    box = region.bounding_box()
    assert box["width"] <= 1 and box["height"] <= 1
    assert not page.locator('iframe[title^="Announces the new answer"]').first.is_visible()


def test_the_chat_box_has_the_cursor_when_the_page_opens(page) -> None:
    """Friction 15: a person (or a screen reader) can type at once; the frame that does it
    is not shown. Last: the reload starts a new session."""
    page.reload()
    page.get_by_test_id("stChatInputTextArea").wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "() => document.activeElement?.dataset?.testid === 'stChatInputTextArea'",
        timeout=30_000,
    )
    assert not page.locator('iframe[title="Puts the cursor in the chat box"]').is_visible()
