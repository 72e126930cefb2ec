"""OCR throughput: pages per second for scanned PDFs, and how much of the text comes back.

Draws N A4 pages of French text (PIAF passages, DejaVu Serif 11 pt at 300 dpi, the way a
scanner would produce them) into an image-only PDF, then times ``rag.documents.formats.extract`` on
it: pypdf finds no text layer, pdfium renders each page, Tesseract (fra+eng) reads it.
Word accuracy is difflib's match ratio between the source words and the OCR words.

Usage: python -m benchmarks.ocr [--pages N]
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import textwrap
import time

from PIL import Image, ImageDraw, ImageFont

from benchmarks.common import PASSAGES
from rag.documents.formats import OCR_DPI, extract, ocr_languages
from rag.evaluate import read_jsonl

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
A4_INCHES = (8.27, 11.69)
POINT_SIZE = 11
MARGIN_INCHES = 1.0
CHARS_PER_LINE = 85


def page_texts(n: int) -> list[str]:
    """About one page of French prose per page: consecutive PIAF passages."""
    rows = iter(read_jsonl(PASSAGES))
    pages = []
    for _ in range(n):
        text = ""
        while len(text) < 2500:
            text += next(rows)["text"] + "\n"
        pages.append(text)
    return pages


def scanned_pdf(texts: list[str]) -> bytes:
    width, height = (round(side * OCR_DPI) for side in A4_INCHES)
    font = ImageFont.truetype(FONT, round(POINT_SIZE * OCR_DPI / 72))
    margin = round(MARGIN_INCHES * OCR_DPI)
    images = []
    for text in texts:
        lines = [line for para in text.splitlines() for line in textwrap.wrap(para, CHARS_PER_LINE)]
        image = Image.new("L", (width, height), 255)
        ImageDraw.Draw(image).multiline_text(
            (margin, margin), "\n".join(lines), font=font, fill=0, spacing=12
        )
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=OCR_DPI, save_all=True, append_images=images[1:])
    return out.getvalue()


def word_accuracy(source: str, read: str) -> float:
    return difflib.SequenceMatcher(None, source.split(), read.split(), autojunk=False).ratio()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args()
    texts = page_texts(args.pages)
    data = scanned_pdf(texts)
    start = time.perf_counter()
    parts, _ = extract(".pdf", data)
    elapsed = time.perf_counter() - start
    assert all(part.ocr for part in parts) and len(parts) == args.pages
    accuracy = sum(word_accuracy(t, p.text) for t, p in zip(texts, parts)) / len(parts)
    chars = sum(len(t) for t in texts) / len(texts)
    print(
        f"{args.pages} pages ({chars:.0f} chars each, {OCR_DPI} dpi, lang {ocr_languages()}, "
        f"{os.cpu_count()} CPUs): {elapsed:.1f} s, {args.pages / elapsed:.2f} pages/s, "
        f"word accuracy {accuracy:.3f}"
    )


if __name__ == "__main__":
    main()
