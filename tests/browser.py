"""Run the real app under ``streamlit run`` and drive it with headless Debian Chromium.

Shared by the browser tests and by benchmarks/app_browser.py (screenshot and start-to-
first-answer timing). Chromium is started with the flags that keep it off the network.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.procs import child_env, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
# The document viewer's frame (titled after rag.ui.render.VIEWER_TITLE): the page has
# other, hidden frames of its own.
VIEWER = 'iframe[title*="the whole document"]'
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_available() -> str | None:
    """Why the browser checks cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up within {timeout:.0f} s")


@contextlib.contextmanager
def streamlit_app(data_dir: Path, timeout: float = 120) -> Iterator[str]:
    """``streamlit run app.py`` on a free port; yields the base URL.

    Everything else comes from .streamlit/config.toml, as for ``./dev app``.
    """
    port = free_port()
    env = child_env(data_dir, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/_stcore/health", timeout)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator:
    """A Playwright page in headless Debian Chromium (no browser download involved)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def ask(page, question: str, timeout_ms: int = 120_000) -> None:
    """Type a question into the chat input and wait for a highlighted citation."""
    box = page.get_by_test_id("stChatInputTextArea")
    box.wait_for(timeout=timeout_ms)
    box.fill(question)
    box.press("Enter")
    page.locator("mark.cite-hl").first.wait_for(timeout=timeout_ms)
