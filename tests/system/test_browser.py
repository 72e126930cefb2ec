"""What only a browser shows: the highlighted quote, and inert hostile documents."""

from __future__ import annotations

import pytest

from rag.service import RagService
from tests.browser import VIEWER, ask, browser_available, chromium_page, streamlit_app
from tests.conftest import make_settings

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]

XSS_DOC = (
    "Document piégé pour les tests de sécurité\n"
    "Le fragment <script>alert(1)</script> illustre une attaque par injection de script.\n"
    "Une image piégée <img src=x onerror=alert(1)> tente aussi de lancer une alerte.\n"
    "Le lien [cliquez ici](javascript:alert(1)) ne doit jamais devenir cliquable.\n"
)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> str:
    """The app on a data dir that also holds the hostile document."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    corpus = tmp_path_factory.mktemp("hostile")
    (corpus / "xss.txt").write_text(XSS_DOC, encoding="utf-8")
    RagService(make_settings(data_dir)).ingest([corpus], show_progress=False)
    with streamlit_app(data_dir) as url:
        yield url


def test_kursk_answer_shows_the_highlighted_quote(app_url: str) -> None:
    external: list[str] = []
    with chromium_page() as page:
        page.on(
            "request",
            lambda r: (
                None
                if r.url.startswith(app_url) or r.url.startswith(("data:", "blob:", "about:"))
                else external.append(r.url)
            ),
        )
        page.goto(app_url)
        ask(page, "How many workers are in Kursk?")
        mark = page.locator("mark.cite-hl").first
        assert "plus de mille spécialistes" in mark.inner_text()
        assert mark.is_visible()
    assert external == [], f"the page tried to load external resources: {external}"


def test_hostile_document_renders_as_inert_text(app_url: str) -> None:
    dialogs: list[str] = []
    with chromium_page() as page:
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(app_url)
        ask(page, "Quel fragment illustre une attaque par injection de script ?")
        page.get_by_text("Show in document").first.click()
        frame_locator = page.frame_locator(VIEWER).first
        frame_locator.locator("mark.cite-hl").wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        body = page.locator("body").inner_text()
        assert "<script>alert(1)</script>" in body
        doc_text = frame_locator.locator("body").inner_text()
        assert "<img src=x onerror=alert(1)>" in doc_text
        assert "[cliquez ici](javascript:alert(1))" in doc_text
        assert page.locator("img[src='x']").count() == 0
        assert frame_locator.locator("img[src='x'], a[href^='javascript']").count() == 0
        assert page.locator("a[href^='javascript']").count() == 0
    assert dialogs == []
