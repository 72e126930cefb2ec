"""Safe rendering of answers and sources for the UI (pure functions, no Streamlit).

Every piece of document or user text is escaped here before it reaches a Markdown or HTML
renderer; the only markup in the output is our own (``<mark>``, a wrapper ``<div>``, one
scroll script in the sandboxed document viewer, the scripts of two hidden frames that focus
the chat box and announce an answer). Keeping this apart from ``app.py`` lets the
tests check the escaping without a browser.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from rag.documents.citations import source_label
from rag.ui.emphasis import text_lang

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:])")
_IMAGE = re.compile(r"!\[")
# GitHub-flavoured Markdown turns ``http://``, ``https://``, ``www.`` and ``name@host`` into
# links in the text *after* backslash escapes are undone, so escaping cannot stop them: a
# word joiner (U+2060, invisible and zero-width) goes inside each trigger instead.
_AUTOLINK = re.compile(r"(?i)(?<=http)(?=s?:)|(?<=www)(?=\.)|(?=@)")
WORD_JOINER = "\u2060"
# Characters a link target keeps as they are; the rest (parentheses, spaces, angle brackets,
# which would end a Markdown link or open markup) are percent-encoded.
_URL_SAFE = ":/?#@!$&'*+,;=%-._~"

HIGHLIGHT_CLASS = "cite-hl"
# Shown beside a citation whose page was scanned: its quote is what OCR read, not the print.
OCR_NOTE = "machine-read text (OCR)"
# Above the nearest sentences of a refusal: they are leads, not an answer.
CLOSEST_HEADING = "Leads, not an answer: the closest passages — they may not answer your question"
_MARK_STYLE = f"mark.{HIGHLIGHT_CLASS}{{background:#ffe066;padding:1px 0}}"
# Captions (the answer's confidence, "Signed in as", the corpus, the subtitle) in the theme's
# text colour at 80% opacity instead of Streamlit's faded grey, which measured 3.9:1 on white
# and 3.8:1 on the sidebar (WCAG AA asks 4.5:1 for 14 px text): now 7.2:1 and 6.9:1 in the
# light theme (tests/system/test_browser_ux.py computes it from the rendered colours), and light on
# dark in the dark theme.
_CAPTION = '[data-testid="stCaptionContainer"]'
_CAPTION_STYLE = f"{_CAPTION},{_CAPTION} *{{color:inherit!important}}{_CAPTION}{{opacity:.8}}"
# The main column stops at 52 rem (about 100 characters a line): at 2560 px wide, lines ran
# to about 230 characters.
_WIDTH_STYLE = '[data-testid="stMainBlockContainer"]{max-width:52rem}'
_EMPHASIS_STYLE = f"mark.{HIGHLIGHT_CLASS} strong{{font-weight:700}}.cite-digits{{font-size:.9em}}"
# Read by screen readers, not shown (the usual visually-hidden pattern).
_SR_ONLY_STYLE = (
    ".sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);"
    "white-space:nowrap}[data-testid=stElementContainer]:has(.sr-only){position:absolute}"
)
# The document viewer framed, so it reads as a window onto the document, not page text.
VIEWER_TITLE = "the whole document, the quoted sentence highlighted"
_VIEWER_STYLE = (
    f'iframe[title$="{VIEWER_TITLE}"]{{border:1px solid rgba(128,128,128,.45);border-radius:6px}}'
)
# A hidden frame of our own, drawn with each new answer: it puts the answer's opening words
# in a live region (``aria-live="polite"``) kept in the page, outside Streamlit's elements,
# so that the region exists before its text changes (one inserted with its text is not
# announced).
# The text reaches the script as a JSON string with ``<`` escaped and is set as text only.
ANNOUNCE_TITLE = "Announces the new answer to screen readers"
LIVE_REGION_ID = "rag-live"
_LIVE_REGION_JS = (
    f"const d = parent.document; let r = d.getElementById('{LIVE_REGION_ID}');"
    f"if (!r) {{ r = d.createElement('div'); r.id = '{LIVE_REGION_ID}'; r.className = 'sr-only';"
    "r.setAttribute('aria-live', 'polite'); r.setAttribute('role', 'status');"
    "d.body.appendChild(r); }"
)
# A hidden frame of our own with one script: it puts the cursor in the chat box once the
# page has loaded (Streamlit's chat box has no autofocus), and makes the live region ahead
# of the first answer. It holds no document or user text.
FOCUS_TITLE = "Puts the cursor in the chat box"
FOCUS_HTML = (
    f"<script>{_LIVE_REGION_JS}const box = () => parent.document.querySelector("
    "'[data-testid=stChatInputTextArea]');"
    "const t = setInterval(() => { if (box()) { box().focus(); clearInterval(t); } }, 100);"
    "setTimeout(() => clearInterval(t), 10000);</script>"
)
# A hidden frame that loads app.py's session route once after a sign-in: the response sets
# the session cookie (``rag.ui.session``); it shows nothing.
COOKIE_TITLE = "Keeps this sign-in across reloads"
# Characters of the answer read out: its opening, the rest is in the message.
ANNOUNCED_CHARS = 300
_FRAMES_STYLE = "".join(
    f'[data-testid=stElementContainer]:has(iframe[title="{title}"]){{display:none}}'
    for title in (FOCUS_TITLE, ANNOUNCE_TITLE, COOKIE_TITLE)
)
PAGE_STYLE = (
    f"<style>.cite-card{{line-height:1.5}}{_MARK_STYLE}{_CAPTION_STYLE}{_WIDTH_STYLE}"
    f"{_EMPHASIS_STYLE}{_SR_ONLY_STYLE}{_VIEWER_STYLE}{_FRAMES_STYLE}</style>"
)
# The document viewer's text box grows with the document up to this height in pixels
# (about 16 lines; with its header, what the fixed 440 px frame showed), then scrolls.
VIEWER_MAX_PX = 400
DOC_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;font-size:15px;line-height:1.55;"
    "margin:0;color:#222}.doc-head{padding:6px 12px;font-size:14px;background:#f3f3f3;"
    "border-bottom:1px solid #ccc}.doc-head .where{color:#444}"
    f".doc-body{{box-sizing:border-box;position:relative;max-height:{VIEWER_MAX_PX}px;overflow:auto;"
    f"padding:4px 12px;white-space:pre-wrap}}{_MARK_STYLE}</style>"
)
# Opens the viewer at the start of the quoted paragraph, scrolling its box only (the
# page's own scroll stays where the reader is).
_TO_PARAGRAPH_JS = (
    "<script>const box = document.getElementById('doc');"
    "box.scrollTop = document.getElementById('para').offsetTop - 4;</script>"
)


def announcement_html(text: str) -> str:
    """The announcing frame's script for a new answer (see ``ANNOUNCE_TITLE``)."""
    spoken = text if len(text) <= ANNOUNCED_CHARS else text[:ANNOUNCED_CHARS] + "…"
    message = json.dumps(f"Answer: {spoken}").replace("<", "\\u003c")
    announce = f"setTimeout(() => {{ r.textContent = {message}; }}, 150);"
    return f"<script>{_LIVE_REGION_JS}{announce}</script>"


def escape_md(text: str) -> str:
    """Backslash-escape Markdown syntax so text renders literally (no links, no HTML).

    URLs and e-mail addresses get a word joiner (``_AUTOLINK``): they stay readable, but a
    document cannot put a live link on the page.
    """
    unlinked = _AUTOLINK.sub(WORD_JOINER, text)
    return _MD_SPECIAL.sub(r"\\\1", unlinked).replace("\n", "  \n")


def paragraph_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """The line(s) around ``[start, end)``: our corpora put one paragraph on a line."""
    left = text.rfind("\n", 0, start) + 1
    right = text.find("\n", end)
    return left, len(text) if right < 0 else right


def highlight_html(
    text: str,
    start: int,
    end: int,
    lo: int = 0,
    hi: int | None = None,
    emphasis: Iterable[tuple[int, int]] = (),
) -> str:
    """``text[lo:hi]`` escaped, with ``text[start:end]`` wrapped in a ``<mark>`` and the
    ``emphasis`` spans (offsets into ``text``, inside the mark) in ``<strong>``."""
    hi = len(text) if hi is None else hi
    body, at = [], start
    for left, right in sorted(emphasis):
        if start <= at <= left < right <= end:
            body += [
                html.escape(text[at:left]),
                f"<strong>{html.escape(text[left:right])}</strong>",
            ]
            at = right
    body.append(html.escape(text[at:end]))
    return (
        html.escape(text[lo:start])
        + f'<mark class="{HIGHLIGHT_CLASS}" id="cite">'
        + "".join(body)
        + "</mark>"
        + html.escape(text[end:hi])
    )


def citation_card_html(text: str, start: int, end: int, question: str | None = None) -> str:
    """The cited sentence highlighted inside its paragraph, marked with the paragraph's
    language (French quotes on an English page are read as French by screen readers).

    Given the ``question`` it answers, the words that answer it are emphasised and French
    number words also shown in digits, below the paragraph (``rag.ui.emphasis``).
    """
    from rag.ui.emphasis import answer_spans, in_digits  # the answer type's module: loaded

    lo, hi = paragraph_bounds(text, start, end)
    spans = (
        [(start + a, start + b) for a, b in answer_spans(question, text[start:end])]
        if question
        else []
    )
    body = highlight_html(text, start, end, lo, hi, spans)
    card = f'<div class="cite-card" lang="{text_lang(text[lo:hi])}">{body}</div>'
    lang = text_lang(question or "")
    digits = [(text[a:b], d) for a, b in spans if (d := in_digits(text[a:b], lang))]
    for phrase, shown in digits:
        card += f'<div class="cite-digits">“{html.escape(phrase)}”: {html.escape(shown)}</div>'
    return card


def paragraph_place(text: str, start: int) -> tuple[int, int]:
    """Which paragraph (non-empty line) of the document holds ``start``, and how many
    there are: the viewer says "paragraph N of M"."""
    before = text[: text.rfind("\n", 0, start) + 1]
    count = sum(1 for line in before.split("\n") if line.strip())
    return count + 1, max(sum(1 for line in text.split("\n") if line.strip()), count + 1)


def document_html(text: str, start: int, end: int, name: str, title: str = "") -> str:
    """The whole document under a header naming it and saying where the quote is, the
    quote highlighted, opened at the start of its paragraph (``_TO_PARAGRAPH_JS``)."""
    lo, hi = paragraph_bounds(text, start, end)
    n, total = paragraph_place(text, start)
    named = f"<strong>{html.escape(title)}</strong> · " if title else ""
    head = (
        f'<div class="doc-head">{named}{html.escape(name)} · '
        f'<span class="where">the quote is in paragraph {n} of {total}</span></div>'
    )
    body = (
        html.escape(text[:lo])
        + f'<span id="para">{highlight_html(text, start, end, lo, hi)}</span>'
        + html.escape(text[hi:])
    )
    return (
        f'{DOC_STYLE}{head}<div class="doc-body" id="doc" lang="{text_lang(text)}">{body}</div>'
        + _TO_PARAGRAPH_JS
    )


def citation_origin(cite: dict[str, Any]) -> str:
    """Markdown naming where a quote comes from: a web article's outlet and date, linking
    to its page, else the file as users know it (both escaped; only an http(s) link is made)."""
    url = str(cite.get("url") or "")
    if urlsplit(url).scheme in ("http", "https"):
        label = " · ".join(str(x) for x in (cite.get("outlet"), cite.get("date")) if x)
        return (
            f"[{escape_md(label or urlsplit(url).hostname or url)}]({quote(url, safe=_URL_SAFE)})"
        )
    return escape_md(source_label(cite))


def citation_place(cite: dict[str, Any]) -> str:
    """Where a citation is: page and section when known, the line, then the document's own
    date (a news analyst weighs a quote by it)."""
    place = [f"page {cite['page']}"] if cite.get("page") else []
    if cite.get("ocr"):
        place.append(OCR_NOTE)
    if cite.get("section"):
        place.append(f"§ {cite['section']}")
    place.append(f"line {cite['line']}")
    if cite.get("date"):
        place.append(f"dated {cite['date']}")
    return " · ".join(place)


def author_label(role: str) -> str:
    """Who wrote a chat message, for screen readers only: the bubbles differ only by icon."""
    return f'<span class="sr-only">{"You asked:" if role == "user" else "Answer:"}</span>'


def answered_by(mode: str) -> str:
    """Who wrote the answer, in a reader's words (the mode's name is jargon)."""
    if mode.startswith("llm:"):
        return f"Written by {mode.removeprefix('llm:')} from the quoted passages"
    why = mode.partition("(fallback: ")[2].rstrip(")")
    return "Quoted from the documents" + (f" (the language model failed: {why})" if why else "")


def confidence_words(confidence: float | None, threshold: float) -> str | None:
    """What the confidence means for the reader, or None for an answer that has none.

    The confidence is the chance that the quoted sentence answers the question, and the
    page answers only at or above ``threshold``: the upper half of what is above it reads
    as likely, the lower half as unsure, and below it there is no answer to trust.
    """
    if confidence is None:
        return None
    if confidence < threshold:
        return "No passage answers this"
    if confidence >= threshold + (1 - threshold) / 2:
        return "Likely answers your question"
    return "Unsure — check the passage"


def confidence_scale(confidence: float, threshold: float) -> str:
    """The scale behind ``confidence_words``, shown one click away (a caption's help)."""
    likely = threshold + (1 - threshold) / 2
    return (
        f"Confidence {confidence:.2f}, on a scale from 0 to 1: the chance that the quoted "
        f"sentence answers the question. From {likely:.2f}: likely answers it. From "
        f"{threshold:.2f}: unsure, check the passage. Below {threshold:.2f}: no answer is "
        "given, only the closest passages."
    )


def upload_refusal(name: str, size: int, limit_mb: float) -> str | None:
    """Why an upload is refused before it is read, for a person; None when it fits.

    ``limit_mb`` is ``RAG_MAX_FILE_MB`` (0: no limit); the uploader states the same limit.
    """
    if not limit_mb or size <= limit_mb * 2**20:
        return None
    return (
        f"{Path(name).name} is {size / 2**20:.1f} MB; files up to {limit_mb:g} MB can be "
        "added. Split it, or ask an administrator to raise the limit."
    )


def export_filename(title: str, day: str) -> str:
    """A conversation's export file name from its title and the day, safe on every system:
    ``Kursk workers 2026-12-07.md`` (it was always ``conversation.md``)."""
    words = re.sub(r"[^\w\- ]+", " ", title, flags=re.UNICODE).split()
    return f"{' '.join(words)[:60].strip() or 'conversation'} {day}.md"


def confidence_label(confidence: float | None) -> str | None:
    """How sure the answer is, as shown under it; None for answers that carry none
    (an error, or one saved before answers had a confidence)."""
    return None if confidence is None else f"Confidence {confidence:.2f}"


def export_text(text: str) -> str:
    """Document or answer text for the Markdown export: its HTML shown, never run.

    Markdown viewers render raw HTML (a document's ``<img src=...>`` would load, its
    ``<script>`` might run) and fetch images (``![](https://tracker)``): ``&``, ``<`` and ``>``
    become entities and an image's ``!`` is escaped. The text otherwise reads as written.
    """
    return _IMAGE.sub(r"\\![", html.escape(text, quote=False))


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
        quote = export_text(c["quote"].replace("\n", " "))
        where = export_text(citation_place(c).replace(" · ", ", "))
        name = c.get("url") or source_label(c)  # a web article: its page
        out.append(f"- [{c['n']}] {export_text(name)}, {where}: “{quote}”")
        why = why_label(c)
        if why:
            out[-1] += f" ({export_text(why)})"
    return [*out, ""] if out else out


def conversation_markdown(messages: Iterable[dict[str, Any]]) -> str:
    """The chat as Markdown: each answer, its confidence, then its citations, or, for a
    refusal, the closest passages under their own heading (never as the answer)."""
    out = ["# Conversation", ""]
    for msg in messages:
        who = "Question" if msg["role"] == "user" else "Answer"
        out += [f"**{who}:** {export_text(msg['content'])}", ""]
        label = confidence_label(msg.get("confidence"))
        if label:
            out += [f"_{label}_", ""]
        out += _citation_lines(msg.get("citations", []))
        if msg.get("closest"):
            out += [f"**{CLOSEST_HEADING}:**", "", *_citation_lines(msg["closest"])]
    return "\n".join(out)
