"""App start to first answer, in a real browser, and the README screenshot.

Builds the seed index first (as `./dev app` would on its first start), then times, for a
fresh `streamlit run` process: server start -> page loaded -> Kursk question answered with
its highlighted citation. Saves docs/screenshot.png with a citation opened in its document.

Usage: python -m benchmarks.app_browser   (needs /usr/bin/chromium)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rag.config import Settings
from rag.service import RagService
from tests.browser import ROOT, ask, chromium_page, streamlit_app

QUESTION = "How many workers are in Kursk?"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rag-app-") as tmp:
        data_dir = Path(tmp) / "data"
        RagService(Settings(data_dir=data_dir, llm_model=None)).ingest(
            [ROOT / "seeds"], show_progress=False
        )
        with chromium_page(width=1300, height=1300) as page:
            started = time.perf_counter()
            with streamlit_app(data_dir) as url:
                server_s = time.perf_counter() - started
                page.goto(url)
                ask(page, QUESTION)
                answer_s = time.perf_counter() - started
                page.get_by_text("Show in document").first.click()
                page.frame_locator("iframe").first.locator("mark.cite-hl").wait_for()
                page.wait_for_timeout(800)
                shot = ROOT / "docs" / "screenshot.png"
                page.screenshot(path=str(shot), full_page=True)
    print(
        f"server up {server_s:.1f} s; app start to first cited answer {answer_s:.1f} s "
        f"(built index, cold process); screenshot: {shot.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
