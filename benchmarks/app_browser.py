"""App start to first answer, in a real browser, and the screenshot (docs/screenshot.png).

Builds the seed index first (as `./dev app` would on its first start), then times, for
each of ``--runs`` fresh `streamlit run` processes: process start -> page loaded -> Kursk
question typed at once -> answer shown with its highlighted citation. Prints every run,
the median and the worst. Saves docs/screenshot.png (last run) with a citation opened.

Usage: python -m benchmarks.app_browser [--runs N]   (needs /usr/bin/chromium)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rag.config import Settings
from rag.service import RagService
from tests.browser import ROOT, VIEWER, ask, chromium_page, streamlit_app

QUESTION = "How many workers are in Kursk?"
SCREENSHOT = ROOT / "docs" / "screenshot.png"


def first_answer_seconds(page, data_dir: Path, screenshot: bool) -> tuple[float, float]:
    """(server up, first cited answer on screen) for one cold app process, in seconds."""
    started = time.perf_counter()
    with streamlit_app(data_dir) as url:
        server_s = time.perf_counter() - started
        page.goto(url)
        ask(page, QUESTION)
        answer_s = time.perf_counter() - started
        if screenshot:
            page.get_by_text("Show in document").first.click()
            page.frame_locator(VIEWER).first.locator("mark.cite-hl").wait_for()
            page.wait_for_timeout(800)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
    return server_s, answer_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold app starts to time")
    runs = parser.parse_args().runs
    answers = []
    with tempfile.TemporaryDirectory(prefix="rag-app-") as tmp:
        data_dir = Path(tmp) / "data"
        RagService(Settings(data_dir=data_dir, llm_model=None)).ingest(
            [ROOT / "seeds"], show_progress=False
        )
        for run in range(1, runs + 1):
            with chromium_page(width=1300, height=1300) as page:
                server_s, answer_s = first_answer_seconds(page, data_dir, run == runs)
            answers.append(answer_s)
            print(f"run {run}: server up {server_s:.1f} s, first cited answer {answer_s:.1f} s")
    print(
        f"app start to first cited answer (built index, cold process, {runs} runs): "
        f"median {statistics.median(answers):.1f} s, worst {max(answers):.1f} s; "
        f"screenshot: {SCREENSHOT.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
