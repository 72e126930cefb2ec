"""Sign-in on, in headless Chromium: the form first, roles, and saved conversations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from rag.accounts.users import Accounts
from tests.browser import ask, browser_available, chromium_page, streamlit_app
from tests.conftest import make_settings

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]

PASSWORD = "correct horse battery"
KURSK = "How many workers are in Kursk?"
KURSK_QUOTE = "plus de mille spécialistes"
BREST = (
    "Rapport sur le port de Brest\n"
    "Le port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
)
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data dir with a reader and an editor (the app indexes the seed article itself)."""
    data_dir = tmp_path_factory.mktemp("signin-browser") / "data"
    accounts = Accounts(make_settings(data_dir))
    accounts.add("rita", PASSWORD, "reader")
    accounts.add("ed", PASSWORD, "editor")
    return data_dir


@pytest.fixture(scope="module")
def app_url(data_dir: Path) -> str:
    with streamlit_app(data_dir) as url:
        yield url


def sign_in(page, name: str) -> None:
    page.get_by_role("textbox", name="User name").wait_for(timeout=WAIT_MS)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("stChatInputTextArea").wait_for(timeout=WAIT_MS)


def test_signed_out_visitor_sees_only_the_form(app_url: str) -> None:
    with chromium_page() as page:
        page.goto(app_url)
        page.get_by_role("textbox", name="Password").wait_for(timeout=WAIT_MS)
        page.wait_for_timeout(2000)  # anything else the page would show has arrived by now
        body = page.locator("body").inner_text()
        for secret in ("Documents", "Chunks", "Kursk", "Corée", "Conversations"):
            assert secret not in body
        assert page.get_by_test_id("stChatInputTextArea").count() == 0
        assert page.get_by_test_id("stFileUploader").count() == 0


def test_reader_asks_and_opens_citations_but_cannot_upload(app_url: str) -> None:
    with chromium_page() as page:
        page.goto(app_url)
        sign_in(page, "rita")
        ask(page, KURSK)
        assert KURSK_QUOTE in page.locator("mark.cite-hl").first.inner_text()
        page.get_by_text("Show in document").first.click()
        viewer = page.frame_locator('iframe[title*="the whole document"]').first
        viewer.locator("mark.cite-hl").wait_for(timeout=30_000)
        assert page.get_by_test_id("stFileUploader").count() == 0
        assert page.get_by_role("button", name="Re-index documents").count() == 0


def test_editor_uploads_a_file_and_asks_about_it(app_url: str) -> None:
    with chromium_page() as page:
        page.goto(app_url)
        sign_in(page, "ed")
        page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(
            files=[{"name": "brest.txt", "mimeType": "text/plain", "buffer": BREST.encode()}]
        )
        page.get_by_text("Uploads indexed").wait_for(timeout=WAIT_MS)
        ask(page, "Combien de navires de pêche le port de Brest a-t-il accueillis en 2023 ?")
        assert "4321 navires" in page.locator("mark.cite-hl").first.inner_text()


def _conversation_id(page) -> str:
    page.wait_for_function("() => location.search.includes('c=')", timeout=WAIT_MS)
    return parse_qs(urlparse(page.url).query)["c"][0]


def test_the_sign_in_and_the_conversation_survive_reload_and_restart(data_dir: Path) -> None:
    """On its own server, stopped and started again on the same data dir: the session
    cookie (``rag.ui.session``, kept in the database) signs the reader in again, and the
    URL reopens the conversation. The question comes at once after the sign-in, as a
    person's might: its rerun can mount the cookie's frame again (it did under CI load)."""
    with streamlit_app(data_dir) as url, chromium_page() as page:
        page.goto(url)
        sign_in(page, "rita")
        ask(page, KURSK)  # at once: the question's rerun may mount the frame again
        _wait_for_the_cookie(page)
        conv_id = _conversation_id(page)
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "rag_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "rag_session" not in page.evaluate("document.cookie")  # no script reads it
        page.reload()  # a new session, and no form: the cookie signs rita in
        page.locator("mark.cite-hl").first.wait_for(timeout=WAIT_MS)
        assert KURSK_QUOTE in page.locator("mark.cite-hl").first.inner_text()
        assert page.get_by_text("Signed in as rita").count() == 1
        kept = _session_cookie(page)
    with streamlit_app(data_dir) as restarted, chromium_page() as page:
        page.context.add_cookies([{**kept, "url": restarted}])
        page.goto(f"{restarted}/?c={conv_id}")
        page.locator("mark.cite-hl").first.wait_for(timeout=WAIT_MS)
        assert KURSK_QUOTE in page.locator("mark.cite-hl").first.inner_text()
        assert page.get_by_text("Signed in as rita").count() == 1


def test_signing_out_ends_the_kept_sign_in(app_url: str) -> None:
    """After "Sign out", neither a reload nor a copy of the old cookie signs anyone in."""
    with chromium_page() as page:
        page.goto(app_url)
        sign_in(page, "ed")
        _wait_for_the_cookie(page)
        old = _session_cookie(page)
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("textbox", name="Password").wait_for(timeout=WAIT_MS)
        page.reload()
        page.get_by_role("textbox", name="Password").wait_for(timeout=WAIT_MS)
    with chromium_page() as page:  # another browser, given the old cookie
        page.context.add_cookies([{**old, "url": app_url}])
        page.goto(app_url)
        page.get_by_role("textbox", name="Password").wait_for(timeout=WAIT_MS)
        page.wait_for_timeout(2000)  # a resumed sign-in would have shown the chat by now
        assert page.get_by_test_id("stChatInputTextArea").count() == 0


def _wait_for_the_cookie(page) -> None:
    """Until the hidden frame has fetched the session cookie (it loads after the sign-in,
    beside whatever the page does next)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('iframe')].some("
        "f => f.contentDocument && f.contentDocument.title === 'Signed in')",
        timeout=WAIT_MS,
    )


def _session_cookie(page) -> dict:
    """The session cookie's name and value, as another browser would be given it."""
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "rag_session"]
    return {"name": cookie["name"], "value": cookie["value"]}
