"""The chat page (served by app.py): ask, read the cited answer, check every citation.

A thin shell over ``rag.service``; all escaping of document and user text happens in
``rag.ui.render``, so nothing typed or indexed is ever rendered as live HTML or Markdown.

When sign-in is on (an account exists, or ``[auth]`` is configured for ``st.login``), the
page shows only the sign-in form until someone signs in; the user and role are read from the
database on every run and each action checks the role again (``require``). Each answer is
saved at once in the user's conversations (``rag.accounts.conversations``); the open one's id is in
the URL, so a reload or a server restart reopens it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
import streamlit.components.v1 as components

from rag.accounts.conversations import LOCAL_USER, ConversationError, Conversations
from rag.accounts.users import ROLES, AccountError, Accounts, Role, User
from rag.config import get_settings
from rag.documents.formats import SUPPORTED_LABEL, SUPPORTED_SUFFIXES
from rag.errors import RagError
from rag.ui.render import (
    CLOSEST_HEADING,
    PAGE_STYLE,
    citation_card_html,
    citation_place,
    confidence_label,
    conversation_markdown,
    document_html,
    escape_md,
    why_label,
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


def oidc_configured() -> bool:
    """Single sign-on is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section."""
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


def oidc_signed_in() -> bool:
    """Whether ``st.login`` signed this browser in (the key is absent until it has)."""
    return bool(st.user.get("is_logged_in", False))


def signed_in() -> tuple[bool, User | None]:
    """Whether sign-in is on, and who is signed in, read from the database every time.

    So a removed account or a changed role applies at once. A single sign-on user gets the
    role of the local account with the same email, or ``RAG_OIDC_ROLE``.
    """
    settings = get_settings()
    accounts = Accounts(settings)
    oidc = oidc_configured()
    if not oidc and not accounts.enabled():
        return False, None
    name = st.session_state.get("user_name")
    if oidc and oidc_signed_in():
        name = str(st.user.get("email") or st.user.get("sub"))
    user = accounts.get(name) if name else None
    if user is None and oidc and oidc_signed_in() and settings.oidc_role != "none":
        user = User(name, settings.oidc_role, 0.0)
    return True, user


def current_user() -> User | None:
    """The signed-in user (None when sign-in is off); else the sign-in page, and stop."""
    on, user = signed_in()
    if not on:
        return None
    if user is None:
        sign_in_page(Accounts(get_settings()), oidc_configured())
    st.session_state.user_name = user.name  # whose conversations these are
    return user


def allowed(role: Role) -> bool:
    """Whether this session may act as ``role`` now (anyone may when sign-in is off)."""
    on, user = signed_in()
    return not on or (user is not None and user.can(role))


def sign_in_page(accounts: Accounts, oidc: bool) -> None:
    """The sign-in form and nothing else: no corpus name, count or text before sign-in."""
    st.title("Sign in")
    if oidc:
        if oidc_signed_in():
            st.error("Your account has no access to these documents; ask an administrator.")
            st.button("Sign out", on_click=st.logout)
        else:
            st.button("Sign in with your organisation", on_click=st.login, type="primary")
    if accounts.enabled():
        with st.form("sign-in"):
            name = st.text_input("User name")
            password = st.text_input("Password", type="password")
            submitted = st.form_submit_button("Sign in")
        if submitted:
            try:
                user = accounts.sign_in(name, password, client_address())
            except AccountError as exc:
                st.error(str(exc))
            else:
                st.session_state.user_name = user.name
                st.rerun()
    st.stop()


def client_address() -> str:
    """The browser's address, which failed sign-ins are counted by (with the user name)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else "unknown"  # None behind some proxies


def require(role: Role) -> None:
    """Refuse an action to a user below ``role``, checked again here, whatever the widgets."""
    if not allowed(role):
        st.error(f"Your role may not do this (it needs {role}).")
        st.stop()


def sign_out() -> None:
    st.session_state.pop("user_name", None)
    new_conversation()
    if oidc_configured() and oidc_signed_in():
        st.logout()


def ensure_index(service: RagService) -> None:
    """Build or refresh the seed index with a visible progress bar (once per session)."""
    if st.session_state.get("index_checked"):
        return
    bar = st.progress(0.0, text="Checking the index…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Indexing the documents: {done / total:.0%}")

    try:
        report = service.ingest([SEEDS], progress=progress, show_progress=False)
    except RagError as exc:  # e.g. an index built with another embedder: say how to fix it
        bar.empty()
        st.error(str(exc))
        st.stop()
    # Set before the next Streamlit call: a question sent meanwhile stops this run there.
    st.session_state.index_checked = True
    bar.empty()
    if report.chunks_embedded:
        st.toast(f"Index ready: {report.summary()}")


def render_citation(msg_index: int, cite: dict, service: RagService, group: str = "doc") -> None:
    """One card: title, file, line, the sentence highlighted in its paragraph.

    ``group`` keeps the toggles of an answer's citations and of its closest passages apart
    (both are numbered from 1).
    """
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
        if why := why_label(cite):
            st.caption(escape_md(why))
        st.html(citation_card_html(text, cite["start"], cite["end"]))
        key = f"{group}-{msg_index}-{cite['n']}"
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
    """Who answered and how sure, any warning, one card per citation; for a low-confidence
    refusal, its closest passages, set apart so they never read as the answer.

    Answers saved before answers had a confidence lack both keys and show neither.
    """
    flag = "" if msg.get("verified", True) else " · ⚠ unverified"
    label = confidence_label(msg.get("confidence"))
    sure = f" · {label}" if label else ""
    st.caption(f"Answered by: {msg.get('mode', 'extractive')}{flag}{sure}")
    if msg.get("note"):
        st.warning(escape_md(msg["note"]))
    for cite in msg.get("citations", []):
        render_citation(msg_index, cite, service)
    if msg.get("closest"):
        with st.expander(CLOSEST_HEADING, expanded=True, key=f"closest-{msg_index}"):
            for cite in msg["closest"]:
                render_citation(msg_index, cite, service, group="closest")


def sidebar(service: RagService, user: User | None) -> None:
    """Corpus status, uploads and re-index (editors), top-k (read by ``handle_question``),
    export, saved conversations."""
    settings = service.settings
    with st.sidebar:
        if user is not None:
            st.caption(f"Signed in as {escape_md(user.name)} ({user.role})")
            st.button("Sign out", on_click=sign_out)
        st.header("Corpus")
        status = service.status()
        cols = st.columns(2)
        cols[0].metric("Documents", status.documents)
        cols[1].metric("Chunks", status.chunks)
        st.caption(f"Embedding model: {status.embed_model}  \nAnswer mode: {status.answer_mode}")
        if settings.watch_dir:
            st.caption(f"Keeping {escape_md(str(settings.watch_dir))} in sync")
        if user is None or user.can("editor"):
            edit_corpus(service)
        st.slider("Passages to retrieve (top-k)", 1, 20, settings.top_k, key="top_k")
        st.download_button(
            "Export conversation (Markdown)",
            conversation_markdown(st.session_state.messages),
            file_name="conversation.md",
            mime="text/markdown",
            disabled=not st.session_state.messages,
        )
        st.button("New conversation", on_click=new_conversation)
        conversation_list()
        if user is not None and user.can("admin"):
            manage_users(user)


def conversations() -> Conversations:
    """The signed-in user's saved conversations (everyone's, as one user, without sign-in)."""
    return Conversations(get_settings(), st.session_state.get("user_name", LOCAL_USER))


def new_conversation() -> None:
    st.session_state.messages = []
    st.session_state.conversation_id = None
    st.query_params.pop("c", None)


def open_conversation(conv_id: str) -> None:
    """Show a saved conversation; its id goes in the URL, so a reload reopens it."""
    try:
        st.session_state.messages = conversations().messages(conv_id)
    except ConversationError as exc:
        new_conversation()
        st.session_state.notice = str(exc)
        return
    st.session_state.conversation_id = conv_id
    st.query_params["c"] = conv_id


def save_exchange(exchange: list[dict]) -> None:
    """Save a question and its answer; the first one creates the conversation."""
    store = conversations()
    conv_id = st.session_state.get("conversation_id")
    try:
        if conv_id is not None:
            store.append(conv_id, exchange)
            return
    except ConversationError:  # deleted from another tab meanwhile: save as a new one
        exchange = st.session_state.messages
    conv_id = store.create(exchange[0]["content"]).id
    store.append(conv_id, exchange)
    st.session_state.conversation_id = conv_id
    st.query_params["c"] = conv_id


def rename_conversation(conv_id: str) -> None:
    try:
        conversations().rename(conv_id, st.session_state[f"title-{conv_id}"])
    except ConversationError as exc:
        st.session_state.notice = str(exc)


def delete_conversation(conv_id: str) -> None:
    try:
        conversations().delete(conv_id)
    except ConversationError as exc:
        st.session_state.notice = str(exc)
    new_conversation()


def conversation_list() -> None:
    """Saved conversations, latest first: open one; rename or delete the open one."""
    st.header("Conversations")
    current = st.session_state.get("conversation_id")
    saved = conversations().list()
    if not saved:
        st.caption("Your conversations are saved here after each answer.")
    for conv in saved:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
        st.button(
            f"{escape_md(conv.title)} · {when}",
            key=f"open-{conv.id}",
            on_click=open_conversation,
            args=(conv.id,),
            type="primary" if conv.id == current else "secondary",
            width="stretch",
        )
        if conv.id == current:
            st.text_input(
                "Rename this conversation",
                value=conv.title,
                key=f"title-{conv.id}",
                on_change=rename_conversation,
                args=(conv.id,),
            )
            st.button("Delete this conversation", on_click=delete_conversation, args=(conv.id,))


def restore_conversation() -> None:
    """After a reload or a restart, reopen the conversation named in the URL; show the
    notice a callback left (callbacks run before the page)."""
    wanted = st.query_params.get("c")
    if wanted and wanted != st.session_state.get("conversation_id"):
        open_conversation(wanted)
    if st.session_state.get("notice"):
        st.warning(st.session_state.pop("notice"))


def edit_corpus(service: RagService) -> None:
    """Uploads and re-index, for editors (or everyone when sign-in is off)."""
    uploads = st.file_uploader(
        f"Add documents ({SUPPORTED_LABEL})",
        type=[suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES],
        accept_multiple_files=True,
        key=f"uploader-{st.session_state.get('uploader_round', 0)}",
    )
    if uploads:
        index_uploads(service, uploads)
    if st.button("Re-index documents"):
        require("editor")
        with st.spinner("Re-indexing…"):
            report = service.ingest([SEEDS, service.upload_dir], prune=True, show_progress=False)
        st.success(report.summary())


def manage_users(admin: User) -> None:
    """Admins list, add and remove accounts (as ``rag user`` does); API keys stay on the CLI."""
    accounts = Accounts(get_settings())
    with st.expander("Users"):
        for other in accounts.list():
            cols = st.columns([3, 2])
            cols[0].markdown(f"{escape_md(other.name)} · {other.role}")
            if other.name != admin.name:  # an admin cannot lock themself out
                cols[1].button(
                    "Remove", key=f"remove-{other.name}", on_click=remove_user, args=(other.name,)
                )
        with st.form("add-user", clear_on_submit=True):
            name = st.text_input("New user name")
            role = st.selectbox("Role", ROLES)
            password = st.text_input("Their password", type="password")
            if st.form_submit_button("Add user"):
                require("admin")
                try:
                    accounts.add(name, password, role)
                except AccountError as exc:
                    st.error(str(exc))
                else:
                    st.success(f"Added {name} ({role}).")


def remove_user(name: str) -> None:
    if not allowed("admin"):
        st.session_state.notice = "Only an admin may remove users."
        return
    try:
        Accounts(get_settings()).remove(name)
    except AccountError as exc:
        st.session_state.notice = str(exc)


def index_uploads(service: RagService, uploads: list) -> None:
    """Index newly uploaded files with a progress bar; report each file that failed."""
    require("editor")
    bar = st.progress(0.0, text="Indexing uploads…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Indexing uploads: {done / total:.0%}")

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
    text.markdown(escape_md(answer.text))
    return answer


def handle_question(question: str, service: RagService) -> None:
    """Stream the answer below the conversation, then show it as checked, with its citations.

    The streamed text is replaced by the final answer: an LLM's unverifiable markers are
    removed and the others renumbered once the stream ends.
    """
    from rag.service import QuestionError, check_question  # loaded by get_service

    require("reader")
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
            except RagError as exc:
                st.error(str(exc))
                return
        answer = show_stream(stream)
        msg = {
            "role": "assistant",
            "content": answer.text,
            "mode": answer.mode,
            "note": answer.note,
            "verified": answer.verified,
            "abstained": answer.abstained,
            "confidence": answer.confidence,
            "citations": [c.to_json() for c in answer.citations],
            "closest": [c.to_json() for c in answer.closest],
        }
        messages.append(msg)
        render_answer_details(len(messages) - 1, msg, service)
    save_exchange(messages[-2:])


def main() -> None:
    st.session_state.setdefault("messages", [])
    user = current_user()  # stops at the sign-in form until someone signs in
    st.title("Ask the documents")
    st.caption("Every answer quotes its sources; open a citation to check it in the original.")
    # The chat box comes first: it shows, and takes a question, while the index loads.
    question = st.chat_input("Ask a question, in English or French")
    service = get_service()
    ensure_index(service)
    restore_conversation()
    for error in st.session_state.pop("upload_errors", []):
        st.error(error)
    if st.session_state.get("upload_report"):
        st.info(f"Uploads indexed: {st.session_state.pop('upload_report')}")
    for i, msg in enumerate(st.session_state.messages):
        render_message(i, msg, service)
    if question is not None:
        handle_question(question, service)
    # Last, so that its status and export already include the answer just given.
    sidebar(service, user)


main()
