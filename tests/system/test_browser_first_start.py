"""The first start on an empty model cache, in a real browser (issue 31, friction 10).

Its own module: the other page tests share one browser session for their module, and
Playwright's sync API runs one session per thread at a time.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.browser import browser_available, chromium_page, streamlit_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]


@pytest.mark.slow
def test_a_first_start_shows_the_model_being_prepared_with_a_moving_bar(
    tmp_path, monkeypatch
) -> None:
    """Friction 10: on an empty model cache, the page says what the wait is, and its bar
    advances (``rag.embedding.onnx_e5.preparing``) until the chat is ready."""
    from playwright.sync_api import Error as PlaywrightError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing converted yet
    seen: list[tuple[str, float]] = []
    with streamlit_app(tmp_path / "data") as url, chromium_page() as page:
        page.goto(url)
        ready = page.get_by_text("Documents you can ask about")
        while not ready.count():
            bar = page.locator("[data-testid=stProgress]")
            with contextlib.suppress(PlaywrightError):
                if bar.count():
                    value = bar.first.get_by_role("progressbar").get_attribute("aria-valuenow")
                    seen.append((bar.first.inner_text(timeout=1000), float(value)))
            page.wait_for_timeout(200)
    preparing = [(text, value) for text, value in seen if "preparing the model" in text]
    assert preparing, seen
    assert "First start: preparing the model, about 20 s, once" in preparing[0][0]
    assert len({value for _, value in preparing}) >= 3, preparing
