"""The chat page (served by app.py): ask, read the cited answer, check every citation.

A thin shell over ``rag.service``; all escaping of document and user text happens in
``rag.render``, so nothing typed or indexed is ever rendered as live HTML or Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
import streamlit.components.v1 as components

from rag.config import get_settings
from rag.formats import SUPPORTED_SUFFIXES
from rag.render import (
    PAGE_STYLE,
    citation_card_html,
    citation_place,
    conversation_markdown,
    document_html,
    escape_md,
)

if TYPE_CHECKING:
    from rag.service import Answer, AnswerStream, RagService

SEEDS = Path(__file__).resolve().parent / "seeds"

st.set_page_config(page_title="Cited answers", page_icon="📑", layout="wide")
# The citation cards' styles, sent first: the browser then loads its HTML element code
# while the index loads, not after the first answer (about 0.15 s sooner on screen).
st.html(PAGE_STYLE)


@st.cache_resource(show_spinner="Loading the search index…")
def get_service() -> RagService:
    """One service per server process: the embedder and index load once (see app.py).

    ``rag.service`` (LlamaIndex, Chroma: seconds to import) is imported here, not at the
    top, so the page and its chat box show while app.py's warm-up is still loading it.
    """
    from rag.service import shared_service

    return shared_service(get_settings())


def ensure_index(service: RagService) -> None:
    """Build or refresh the seed index with a visible progress bar (once per session)."""
    if st.session_state.get("index_checked"):
        return
    bar = st.progress(0.0, text="Checking the index…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Indexing the documents: {done}/{total} chunks")

    report = service.ingest([SEEDS], progress=progress, show_progress=False)
    # Set before the next Streamlit call: a question sent meanwhile stops this run there.
    st.session_state.index_checked = True
    bar.empty()
    if report.chunks_embedded:
        st.toast(f"Index ready: {report.summary()}")


def render_citation(msg_index: int, cite: dict, service: RagService) -> None:
    """One card: title, file, line, the sentence highlighted in its paragraph."""
    text = service.document_text(cite.get("extracted") or cite["source"])
    with st.container(border=True):
        st.markdown(
            f"**[{cite['n']}] {escape_md(cite.get('title') or '')}**  \n"
            f"{escape_md(Path(cite['source']).name)} · {escape_md(citation_place(cite))}"
        )
        if text is None or text[cite["start"] : cite["end"]] != cite["quote"]:
            st.warning("The source file changed since this answer; citation hidden.")
            return
        if not cite.get("verified", True):
            st.caption("⚠ Unverified: the model's quote is not in this passage.")
        st.html(citation_card_html(text, cite["start"], cite["end"]))
        key = f"doc-{msg_index}-{cite['n']}"
        if st.toggle("Show in document", key=key):
            components.html(
                document_html(text, cite["start"], cite["end"]), height=320, scrolling=True
            )


def render_message(msg_index: int, msg: dict, service: RagService) -> None:
    with st.chat_message(msg["role"]):
        st.markdown(escape_md(msg["content"]))
        if msg["role"] == "assistant":
            render_answer_details(msg_index, msg, service)


def render_answer_details(msg_index: int, msg: dict, service: RagService) -> None:
    """Who answered, any warning, then one card per citation."""
    flag = "" if msg.get("verified", True) else " · ⚠ unverified"
    confidence = msg.get("confidence")
    shown = "" if confidence is None else f" · confidence {confidence:.0%}"
    st.caption(f"Answered by: {msg.get('mode', 'extractive')}{shown}{flag}")
    from rag.answer import CLOSEST_NOTE  # loaded with the service, which answered

    if msg.get("abstained") and msg.get("citations"):
        # Below the confidence threshold: the passages shown are the closest, not an answer.
        st.info(CLOSEST_NOTE)
    if msg.get("note") and msg["note"] != CLOSEST_NOTE:
        st.warning(escape_md(msg["note"]))
    for cite in msg.get("citations", []):
        render_citation(msg_index, cite, service)


def sidebar(service: RagService) -> None:
    """Corpus status, uploads, re-index, top-k (read by ``handle_question``) and export."""
    settings = service.settings
    with st.sidebar:
        st.header("Corpus")
        status = service.status()
        cols = st.columns(2)
        cols[0].metric("Documents", status.documents)
        cols[1].metric("Chunks", status.chunks)
        st.caption(f"Embedding model: {status.embed_model}  \nAnswer mode: {status.answer_mode}")
        uploads = st.file_uploader(
            "Add documents (.txt, .md, .pdf, .html)",
            type=[suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES],
            accept_multiple_files=True,
            key=f"uploader-{st.session_state.get('uploader_round', 0)}",
        )
        if uploads:
            index_uploads(service, uploads)
        if st.button("Re-index documents"):
            with st.spinner("Re-indexing…"):
                report = service.ingest(
                    [SEEDS, service.upload_dir], prune=True, show_progress=False
                )
            st.success(report.summary())
        st.slider("Passages to retrieve (top-k)", 1, 20, settings.top_k, key="top_k")
        st.download_button(
            "Export conversation (Markdown)",
            conversation_markdown(st.session_state.messages),
            file_name="conversation.md",
            mime="text/markdown",
            disabled=not st.session_state.messages,
        )
        if st.button("New conversation"):
            st.session_state.messages = []
            st.rerun()


def index_uploads(service: RagService, uploads: list) -> None:
    """Index newly uploaded files with a progress bar; report each file that failed."""
    bar = st.progress(0.0, text="Indexing uploads…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Indexing uploads: {done}/{total} chunks")

    report = service.add_uploads([(f.name, f.getvalue()) for f in uploads], progress=progress)
    bar.empty()
    st.session_state.upload_errors = [
        f"Could not index {Path(name).name}: {reason}" for name, reason in report.failed
    ]
    st.session_state.upload_report = report.summary()
    st.session_state.uploader_round = st.session_state.get("uploader_round", 0) + 1
    st.rerun()


def show_stream(stream: AnswerStream) -> Answer:
    """Write the answer as it arrives, then replace it with the checked final text.

    Not ``st.write_stream``: its first call imports pandas, which would hold up the first
    answer by a good part of a second.
    """
    text = st.empty()
    shown = ""
    for token in stream:
        shown += token
        text.markdown(escape_md(shown) + " ▌")
    answer = stream.finalize()
    text.markdown(escape_md(answer.answer))
    return answer


def handle_question(question: str, service: RagService) -> None:
    """Stream the answer below the conversation, then show it as checked, with its citations.

    The streamed text is replaced by the final answer: an LLM's unverifiable markers are
    removed and the others renumbered once the stream ends.
    """
    from rag.service import QuestionError, StoreError, check_question  # loaded by get_service

    try:
        check_question(question)
    except QuestionError as exc:
        st.warning(str(exc))
        return
    messages = st.session_state.messages
    history = [(m["role"], m["content"]) for m in messages]
    messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(escape_md(question))
    top_k = st.session_state.get("top_k", service.settings.top_k)
    with st.chat_message("assistant"):
        with st.spinner("Searching the documents…"):
            try:
                stream = service.ask_stream(question, top_k=top_k, history=history)
            except StoreError as exc:
                st.error(str(exc))
                return
        answer = show_stream(stream)
        msg = {
            "role": "assistant",
            "content": answer.answer,
            "mode": answer.mode,
            "note": answer.note,
            "verified": answer.verified,
            "abstained": answer.abstained,
            "confidence": answer.confidence,
            "citations": [c.to_json() for c in answer.citations],
        }
        messages.append(msg)
        render_answer_details(len(messages) - 1, msg, service)


def main() -> None:
    st.session_state.setdefault("messages", [])
    st.title("Ask the documents")
    st.caption("Every answer quotes its sources; open a citation to check it in the original.")
    # The chat box comes first: it shows, and takes a question, while the index loads.
    question = st.chat_input("Ask a question, in English or French")
    service = get_service()
    ensure_index(service)
    for error in st.session_state.pop("upload_errors", []):
        st.error(error)
    if st.session_state.get("upload_report"):
        st.info(f"Uploads indexed: {st.session_state.pop('upload_report')}")
    for i, msg in enumerate(st.session_state.messages):
        render_message(i, msg, service)
    if question is not None:
        handle_question(question, service)
    # Last, so that its status and export already include the answer just given.
    sidebar(service)


main()
