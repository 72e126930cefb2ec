"""Safe rendering of answers and sources for the UI (pure functions, no Streamlit).

Every piece of document or user text is escaped here before it reaches a Markdown or HTML
renderer; the only markup in the output is our own (``<mark>``, a wrapper ``<div>``, one
scroll script in the sandboxed document viewer). Keeping this apart from ``app.py`` lets the
tests check the escaping without a browser.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:])")

HIGHLIGHT_CLASS = "cite-hl"
# Shown beside a citation whose page was scanned: its quote is what OCR read, not the print.
OCR_NOTE = "machine-read text (OCR)"
# Above the nearest sentences of a low-confidence refusal: they are leads, not an answer.
CLOSEST_HEADING = "Closest passages — they may not answer your question"
_MARK_STYLE = f"mark.{HIGHLIGHT_CLASS}{{background:#ffe066;padding:1px 0}}"
PAGE_STYLE = f"<style>.cite-card{{line-height:1.5}}{_MARK_STYLE}</style>"
DOC_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;font-size:15px;line-height:1.55;"
    f"margin:0;padding:0 12px;white-space:pre-wrap;color:#222}}{_MARK_STYLE}</style>"
)


def escape_md(text: str) -> str:
    """Backslash-escape Markdown syntax so text renders literally (no links, no HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def paragraph_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """The line(s) around ``[start, end)``: our corpora put one paragraph on a line."""
    left = text.rfind("\n", 0, start) + 1
    right = text.find("\n", end)
    return left, len(text) if right < 0 else right


def highlight_html(text: str, start: int, end: int, lo: int = 0, hi: int | None = None) -> str:
    """``text[lo:hi]`` escaped, with ``text[start:end]`` wrapped in a ``<mark>``."""
    hi = len(text) if hi is None else hi
    return (
        html.escape(text[lo:start])
        + f'<mark class="{HIGHLIGHT_CLASS}" id="cite">'
        + html.escape(text[start:end])
        + "</mark>"
        + html.escape(text[end:hi])
    )


def citation_card_html(text: str, start: int, end: int) -> str:
    """The cited sentence highlighted inside its paragraph."""
    lo, hi = paragraph_bounds(text, start, end)
    body = highlight_html(text, start, end, lo, hi)
    return f'<div class="cite-card">{body}</div>'


def document_html(text: str, start: int, end: int) -> str:
    """The whole document, the span highlighted and scrolled into view on load."""
    return (
        DOC_STYLE
        + highlight_html(text, start, end)
        + "<script>document.getElementById('cite').scrollIntoView({block:'center'});</script>"
    )


def citation_place(cite: dict[str, Any]) -> str:
    """Where a citation is: page and section when known, then the line."""
    place = [f"page {cite['page']}"] if cite.get("page") else []
    if cite.get("ocr"):
        place.append(OCR_NOTE)
    if cite.get("section"):
        place.append(f"§ {cite['section']}")
    place.append(f"line {cite['line']}")
    return " · ".join(place)


def confidence_label(confidence: float | None) -> str | None:
    """How sure the answer is, as shown under it; None for answers that carry none
    (an error, or one saved before answers had a confidence)."""
    return None if confidence is None else f"Confidence {confidence:.2f}"


def why_label(cite: dict[str, Any]) -> str | None:
    """What the answer verifier says of a quote, shown under it: the asked words its
    sentence does not state, and, for an LLM's citation it finds not answering, that."""
    parts = []
    if cite.get("supported") is False:
        parts.append("This sentence may not answer the question.")
    if cite.get("missing"):
        parts.append("Not in this passage: " + ", ".join(cite["missing"]))
    return " ".join(parts) or None


def _citation_lines(cites: list[dict[str, Any]]) -> list[str]:
    """One Markdown list item per citation: number, file, place, the quote (and why not)."""
    out = []
    for c in cites:
        quote = c["quote"].replace("\n", " ")
        where = citation_place(c).replace(" · ", ", ")
        why = why_label(c)
        out.append(f"- [{c['n']}] {Path(c['source']).name}, {where}: “{quote}”")
        if why:
            out[-1] += f" ({why})"
    return [*out, ""] if out else out


def conversation_markdown(messages: Iterable[dict[str, Any]]) -> str:
    """The chat as Markdown: each answer, its confidence, then its citations, or, for a
    refusal, the closest passages under their own heading (never as the answer)."""
    out = ["# Conversation", ""]
    for msg in messages:
        who = "Question" if msg["role"] == "user" else "Answer"
        out += [f"**{who}:** {msg['content']}", ""]
        label = confidence_label(msg.get("confidence"))
        if label:
            out += [f"_{label}_", ""]
        out += _citation_lines(msg.get("citations", []))
        if msg.get("closest"):
            out += [f"**{CLOSEST_HEADING}:**", "", *_citation_lines(msg["closest"])]
    return "\n".join(out)
