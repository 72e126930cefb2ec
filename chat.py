"""The chat page (served by app.py): ask, read the cited answer, check every citation.

A thin shell over ``rag.service``; all escaping of document and user text happens in
``rag.ui.render``, so nothing typed or indexed is ever rendered as live HTML or Markdown.

When sign-in is on (an account exists, or ``[auth]`` is configured for ``st.login``), the
page shows only the sign-in form until someone signs in; the user and role are read from the
database on every run and each action checks the role again (``require``). Each answer is
saved at once in the user's conversations (``rag.accounts.conversations``); the open one's id is in
the URL, so a reload or a server restart reopens it.

Workspaces: the page works in one workspace at a time, picked in the sidebar among those the
user may read (the picker shows only when there are several); its questions, citations,
document viewer, welcome list, uploads and conversations are all of that workspace, and a
link to a conversation in a workspace the user may not read is refused as a missing one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from rag.accounts.conversations import LOCAL_USER, ConversationError, Conversations
from rag.accounts.users import ROLES, AccountError, Accounts, Role, User
from rag.config import DEFAULT_WORKSPACE, get_settings
from rag.documents.citations import source_label
from rag.documents.formats import SUPPORTED_LABEL, SUPPORTED_SUFFIXES
from rag.errors import RagError
from rag.index.records import FileRecord
from rag.retrieval.filters import Filters
from rag.ui import page, session, uploads
from rag.ui.emphasis import example_questions
from rag.ui.followup import FOLLOW_UP_HINT, is_follow_up
from rag.ui.page import (
    REMOVED_NOTICE,
    Identity,
    conversation_label,
    document_label,
    document_line,
)
from rag.ui.render import (
    ANNOUNCE_TITLE,
    CLOSEST_HEADING,
    COOKIE_TITLE,
    FOCUS_HTML,
    FOCUS_TITLE,
    PAGE_STYLE,
    VIEWER_TITLE,
    announcement_html,
    answered_by,
    author_label,
    citation_card_html,
    citation_origin,
    citation_place,
    confidence_scale,
    confidence_words,
    conversation_markdown,
    document_html,
    escape_md,
    export_filename,
    upload_refusal,
    why_label,
)

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator

    from rag.embedding.onnx_e5 import Preparation
    from rag.retrieval.scope import Scope
    from rag.service import Answer, AnswerStream, RagService

SEEDS = Path(__file__).resolve().parent / "seeds"
LOADING_NOTICE = (
    "Loading the search index… A first start also prepares the model that reads the "
    "documents: about 20 s, once. Your questions are kept and answered when it is ready."
)
# Over the bar while the model is converted (``rag.embedding.onnx_e5.preparing``).
PREPARING = "First start: preparing the model, about 20 s, once ({step}). Your questions are kept."
# How often the page looks again while the index loads: short against the load (seconds),
# long enough that the page's runs cost nothing noticeable.
LOADING_POLL_S = 0.3
# Titles listed before the first question (the sidebar counts the rest); the example
# questions come from these documents' texts.
WELCOME_TITLES = 8

PRODUCT = "Cited answers"
st.set_page_config(page_title=PRODUCT, page_icon="📑", layout="wide")
# The citation cards' styles, sent first: the browser then loads its HTML element code
# while the index loads, not after the first answer (about 0.15 s sooner on screen).
st.html(PAGE_STYLE)


@st.cache_resource(show_spinner=False)
def service_loading() -> Future[RagService]:
    """One service per server process, loaded in a thread: the embedder and index load once
    (see app.py).

    ``rag.service`` (LlamaIndex, Chroma: seconds to import) is imported there, not at the
    top, so the page and its chat box show while app.py's warm-up is still loading it. No
    page run waits for it: Streamlit keeps only the newest chat input of the runs it has
    not started yet, so two questions sent while a run waited would become one.
    """
    return ThreadPoolExecutor(1, "rag-page-load").submit(load_service)


def load_service() -> RagService:
    """The shared service with its models loaded: on a first start they are converted
    (about 20 s, once) here, while the page polls and shows the progress, not in the first
    page run that indexes or answers, which could show none."""
    from rag.answering.verifier import default_verifier
    from rag.service import shared_service

    service = shared_service(get_settings())
    _ = service.embedder
    if service.decision.score == "verifier" or service.settings.llm_enabled:
        default_verifier()  # the answer verifier reads every candidate answer
    return service


def get_service() -> RagService:
    """The loaded service; until it is, a loading notice, and the page runs again shortly
    (each question sent meanwhile gets its own run, and so its place in ``pending``)."""
    loading = service_loading()
    if not loading.done():
        preparation = model_preparation()
        if preparation is None:
            st.info(LOADING_NOTICE, icon="⏳")
        else:  # the bar of the conversion the warm-up thread runs
            st.progress(preparation.fraction, PREPARING.format(step=preparation.step))
        time.sleep(LOADING_POLL_S)
        st.rerun()
    error = loading.exception()
    if error is not None:
        service_loading.clear()  # try again on the next run
    if isinstance(error, RagError):  # e.g. a model that cannot load: say how to fix it
        st.error(str(error))
        st.stop()
    return loading.result()


def model_preparation() -> Preparation | None:
    """The embedding model's first-start conversion under way, or None.

    Read only once the warm-up has imported ``rag.embedding.onnx_e5``: importing it here
    (numpy) would hold up the first page by about 0.1 s, and until then nothing converts.
    """
    module = sys.modules.get("rag.embedding.onnx_e5")
    return module.preparing() if module is not None else None


def oidc_configured() -> bool:
    """Single sign-on is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section."""
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


def oidc_signed_in() -> bool:
    """Whether ``st.login`` signed this browser in (the key is absent until it has)."""
    return bool(st.user.get("is_logged_in", False))


def signed_in() -> tuple[bool, User | None]:
    """Whether sign-in is on, and who is signed in (``rag.ui.page.signed_in``, which reads
    the database every time, so a removed account or a changed role applies at once)."""
    oidc = oidc_configured()
    sso = oidc and oidc_signed_in()
    resume_session()
    identity = Identity(
        st.session_state.get("user_name"),
        st.session_state.get("user_created"),
        oidc,
        sso,
        str(st.user.get("email") or st.user.get("sub")) if sso else None,
    )
    return page.signed_in(get_settings(), identity)


def resume_session() -> None:
    """A reload or a new tab: the sign-in its session cookie names, if still valid
    (``rag.ui.session``; checked against the account like any sign-in). Once per session:
    the cookie the page can read is the one the browser sent when the page opened."""
    if st.session_state.get("session_checked"):
        return
    st.session_state.session_checked = True
    token = st.context.cookies.get(session.COOKIE)
    if not isinstance(token, str) or not token or "user_name" in st.session_state:
        return
    found = session.resume(get_settings(), token)
    if found is not None:
        st.session_state.user_name = found.user_name
        st.session_state.user_created = found.user_created
        st.session_state.page_session = found.session_id


def keep_signed_in(user: User) -> None:
    """After a sign-in, for ``RAG_SESSION_HOURS``: the hidden frame (``cookie_frame``) loads
    app.py's session route, which sets the cookie a reload signs in with."""
    settings = get_settings()
    if settings.session_hours > 0:
        session_id, code = session.begin(settings, user.name, user.created)
        st.session_state.page_session = session_id
        st.session_state.cookie_url = f"{session.ROUTE}?n={code}"


def cookie_frame() -> None:
    """The hidden frame that takes the session cookie, drawn at the same place on every run
    after a sign-in, so it loads once (a rerun can still mount it again: the session route
    answers a second load, ``rag.ui.session.claim``)."""
    if st.session_state.get("cookie_url"):
        st.iframe(st.session_state.cookie_url, height=1, alt=COOKIE_TITLE)


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


def session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else ""


def sign_in_page(accounts: Accounts, oidc: bool) -> None:
    """The sign-in form and nothing else: no corpus name, count or text before sign-in, and
    no upload taken for this session (``rag.ui.uploads``)."""
    uploads.allow(session_id(), False)
    st.title(f"Sign in to {PRODUCT}")
    st.caption("Questions answered from your organisation's documents, every answer cited.")
    if oidc:
        if oidc_signed_in():
            st.error("Your account has no access to these documents; ask an administrator.")
            st.button("Sign out", on_click=st.logout)
        else:
            st.button("Sign in with your organisation", on_click=st.login, type="primary")
    if accounts.enabled():
        with st.form("sign-in"):
            name = st.text_input("User name", autocomplete="username")
            # Not "new-password" (Streamlit's default): password managers fill the saved one.
            password = st.text_input("Password", type="password", autocomplete="current-password")
            submitted = st.form_submit_button("Sign in")
        if submitted:
            try:
                user = accounts.sign_in(name, password, client_address())
            except AccountError as exc:
                st.error(str(exc))
            else:
                st.session_state.user_name = user.name
                st.session_state.user_created = user.created  # this account, not a namesake
                keep_signed_in(user)
                st.rerun()
    st.stop()


def client_address() -> str:
    """The browser's address, which failed sign-ins are counted by (with the user name)."""
    return page.client_address(st.context.ip_address)


def require(role: Role) -> None:
    """Refuse an action to a user below ``role``, checked again here, whatever the widgets."""
    if not allowed(role):
        st.error(f"Your role may not do this (it needs {role}).")
        st.stop()


def choose_workspace(user: User | None) -> None:
    """The workspaces this session may read (``readable``) and the one it works in
    (``workspace``), checked again on every run."""
    readable = page.readable_workspaces(get_settings(), user is not None, user)
    st.session_state.readable = readable
    st.session_state.workspace = page.chosen_workspace(readable, st.session_state.get("workspace"))


def workspace() -> str | None:
    return st.session_state.get("workspace")


def scope(service: RagService) -> Scope:
    """The scope of every read the page makes: the chosen workspace only."""
    return service.scope([workspace()] if workspace() else [])


def may_edit() -> bool:
    """Whether this session may upload to and re-index the chosen workspace now."""
    on, user = signed_in()
    return page.may_edit(get_settings(), on, user, workspace())


def require_edit() -> None:
    """Refuse a change to the workspace unless this session may make it, checked again here."""
    if not may_edit():
        st.error("Your role may not change this workspace (it needs editor).")
        st.stop()


def sign_out() -> None:
    """Forget the user here, and end the kept sign-in, so no reload or copied cookie
    resumes it."""
    st.session_state.pop("user_name", None)
    st.session_state.pop("user_created", None)
    st.session_state.pop("cookie_url", None)
    if "page_session" in st.session_state:
        session.end(get_settings(), st.session_state.pop("page_session"))
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


def render_citation(
    msg_index: int,
    cite: dict,
    service: RagService,
    group: str = "doc",
    question: str = "",
    titled: bool = True,
) -> None:
    """One card: title, file, line, the sentence highlighted in its paragraph, and in it
    the words that answer ``question`` (none for closest passages: they are no answer).
    ``titled`` is False for a card from the same document as the card above it: the
    article's title (two lines, six on a phone) is not repeated.

    ``group`` keeps the toggles of an answer's citations and of its closest passages apart
    (both are numbered from 1).
    """
    text = service.document_text(cite.get("extracted") or cite["source"], scope(service))
    with st.container(border=True):
        title = f"**{escape_md(cite.get('title') or '')}**  \n" if titled else ""
        st.markdown(
            f"**[{cite['n']}]** {title}{citation_origin(cite)} · {escape_md(citation_place(cite))}"
        )
        if text is None and not service.is_indexed(cite["source"]):
            st.warning(REMOVED_NOTICE)
            st.markdown(f"> {escape_md(' '.join(cite['quote'].split()))}")
            return
        if text is None or text[cite["start"] : cite["end"]] != cite["quote"]:
            st.warning("The source file changed since this answer; citation hidden.")
            return
        if not cite.get("verified", True):
            st.caption("⚠ Unverified: the model's quote is not in this passage.")
        if why := why_label(cite):
            st.caption(escape_md(why))
        st.html(citation_card_html(text, cite["start"], cite["end"], question or None))
        key = f"{group}-{msg_index}-{cite['n']}"
        if st.toggle("Show in document", key=key):
            name = source_label(cite)
            st.iframe(  # as tall as its content: the text box inside stops at VIEWER_MAX_PX
                document_html(text, cite["start"], cite["end"], name, cite.get("title") or ""),
                alt=f"{name}: {VIEWER_TITLE}",
            )


def render_message(msg_index: int, msg: dict, service: RagService) -> None:
    with st.chat_message(msg["role"]):
        st.html(author_label(msg["role"]))
        st.markdown(escape_md(msg["content"]))
        if msg["role"] == "assistant":
            render_answer_details(msg_index, msg, service)


def render_answer_details(msg_index: int, msg: dict, service: RagService) -> None:
    """Who answered and how sure, any warning, one card per citation; for a low-confidence
    refusal, its closest passages, set apart so they never read as the answer.

    Answers saved before answers had a confidence lack both keys and show neither. The
    confidence is said in words; its number and scale are in the caption's help.
    """
    confidence, threshold = msg.get("confidence"), service.decision.threshold
    parts = [answered_by(msg.get("mode", "extractive"))]
    if not msg.get("verified", True):
        parts.append("⚠ unverified")
    words = confidence_words(confidence, threshold)
    parts += [words] if words else []
    scale = None if confidence is None else confidence_scale(confidence, threshold)
    st.caption(" · ".join(parts), help=scale)
    if msg.get("note"):
        st.warning(escape_md(msg["note"]))
    if msg.get("hint"):
        st.caption(msg["hint"])
    before = st.session_state.messages[msg_index - 1] if msg_index > 0 else {}
    asked = before.get("content", "") if before.get("role") == "user" else ""
    previous = None
    for cite in msg.get("citations", []):
        titled, previous = cite["source"] != previous, cite["source"]
        render_citation(msg_index, cite, service, question=asked, titled=titled)
    if msg.get("closest"):
        with st.expander(CLOSEST_HEADING, expanded=True, key=f"closest-{msg_index}"):
            previous = None
            for cite in msg["closest"]:
                titled, previous = cite["source"] != previous, cite["source"]
                render_citation(msg_index, cite, service, group="closest", titled=titled)


def welcome(service: RagService) -> None:
    """Before the first question, what is indexed: a person then knows what to ask about."""
    files = service.indexed_files(scope(service)).values()
    titles = sorted({r.title or Path(r.source).name for r in files})
    if not titles:
        st.info("No document is indexed yet: add some in the sidebar.")
        return
    shown = [f"- {escape_md(title)}" for title in titles[:WELCOME_TITLES]]
    if len(titles) > WELCOME_TITLES:
        shown.append(f"- … and {len(titles) - WELCOME_TITLES} more")
    st.markdown(f"**Documents you can ask about ({len(titles)}):**  \n" + "\n".join(shown))
    refs = service.document_refs(scope(service))[:WELCOME_TITLES]
    texts = [service.document_text(ref) for ref in refs]
    for example in example_questions(t for t in texts if t):
        st.button(
            f"Try: {escape_md(example)}", on_click=st.session_state.pending.append, args=(example,)
        )


def sidebar(service: RagService, user: User | None) -> None:
    """Corpus status, uploads and re-index (editors), top-k (read by ``handle_question``),
    export, saved conversations."""
    settings = service.settings
    with st.sidebar:
        if user is not None:
            st.caption(f"Signed in as {escape_md(user.name)} ({user.role})")
            st.button("Sign out", on_click=sign_out)
        if len(st.session_state.readable) > 1:
            st.selectbox(
                "Workspace", st.session_state.readable, key="workspace", on_change=new_conversation
            )
        st.header("Corpus")
        status = service.status(scope(service))
        st.metric("Documents", status.documents)
        if settings.watch_dir:
            st.caption(f"Keeping {escape_md(str(settings.watch_dir))} in sync")
        if may_edit():
            edit_corpus(service)
        records = service.documents(scope(service))  # read once for both sections
        filter_controls(records)
        documents_section(records, may_edit())
        with st.expander("Search details"):  # the technical terms stay out of the main view
            st.caption(
                f"Passages indexed (chunks): {status.chunks}  \nEmbedding model: "
                f"{status.embed_model}  \nAnswer mode: {status.answer_mode}"
            )
            st.slider("Passages read per question (top-k)", 1, 20, settings.top_k, key="top_k")
        st.download_button(
            "Export conversation (Markdown)",
            conversation_markdown(st.session_state.messages),
            file_name=export_name(),
            mime="text/markdown",
            disabled=not st.session_state.messages,
        )
        st.button("New conversation", on_click=new_conversation)
        conversation_list()
        if user is not None and user.can("admin"):
            manage_users(user)


def export_name() -> str:
    """The export's file name: the open conversation's title and today's date."""
    current = st.session_state.get("conversation_id")
    title = next((c.title for c in conversations().list() if c.id == current), "conversation")
    return export_filename(title, time.strftime("%Y-%m-%d"))


def conversations() -> Conversations:
    """The signed-in user's saved conversations (everyone's, as one user, without sign-in)."""
    user = st.session_state.get("user_name", LOCAL_USER)
    return Conversations(get_settings(), user, workspace() or DEFAULT_WORKSPACE)


def new_conversation() -> None:
    st.session_state.messages = []
    st.session_state.conversation_id = None
    st.query_params.pop("c", None)


def open_conversation(conv_id: str) -> None:
    """Show a saved conversation, in its workspace; its id goes in the URL, so a reload
    reopens it. One in a workspace this user may not read is refused as a missing one."""
    on, user = signed_in()
    readable = page.readable_workspaces(get_settings(), on, user)
    try:
        held_in = page.conversation_workspace(conversations(), conv_id, readable)
        st.session_state.messages = conversations().messages(conv_id)
    except ConversationError as exc:
        new_conversation()
        st.session_state.notice = str(exc)
        return
    st.session_state.workspace = held_in
    st.session_state.conversation_id = conv_id
    st.query_params["c"] = conv_id


def save_exchange(exchange: list[dict]) -> None:
    """Save a question and its answer; the first one creates the conversation."""
    conv_id = page.save_exchange(
        conversations(),
        st.session_state.get("conversation_id"),
        exchange,
        st.session_state.messages,
    )
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
        st.button(
            conversation_label(conv, escape_md),
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
            confirmed_button(
                "Delete this conversation",
                f"delete-{conv.id}",
                "Delete this conversation? It cannot be undone.",
                delete_conversation,
                conv.id,
            )


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
    limit_mb = service.settings.max_file_mb
    uploads = st.file_uploader(
        f"Add documents ({SUPPORTED_LABEL})",
        type=[suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES],
        accept_multiple_files=True,
        key=f"uploader-{st.session_state.get('uploader_round', 0)}",
        # The browser states, and keeps to, RAG_MAX_FILE_MB (Streamlit's own is 200 MB).
        max_upload_size=math.ceil(limit_mb) if limit_mb > 0 else None,
    )
    if uploads:
        index_uploads(service, uploads)
    if st.button("Re-index documents"):
        require_edit()
        chosen = workspace() or DEFAULT_WORKSPACE
        folders = [SEEDS] if chosen == DEFAULT_WORKSPACE else []
        with st.spinner("Re-indexing…"):
            report = service.ingest(
                [*folders, service.upload_dir_of(chosen)],
                prune=True,
                show_progress=False,
                workspace=chosen,
            )
        st.success(report.summary())


def filter_controls(documents: list[FileRecord]) -> None:
    """The question's filters, read by ``handle_question`` (``chosen_filters``): documents,
    a date range (inclusive), a folder. Each retrieval arm searches only inside them."""
    records = {r.id: r for r in documents}
    chosen = [i for i in st.session_state.get("filter_docs", []) if i in records]
    st.session_state.filter_docs = chosen  # a document removed meanwhile is no choice
    with st.expander("Filters", expanded=chosen_filters_set()):
        st.multiselect(
            "Only these documents",
            list(records),
            format_func=lambda doc_id: document_label(records[doc_id]),
            key="filter_docs",
        )
        st.date_input("Dated from", value=None, format="YYYY-MM-DD", key="filter_since")
        st.date_input("Dated until", value=None, format="YYYY-MM-DD", key="filter_until")
        st.text_input("Only under this folder", key="filter_folder", placeholder="e.g. lemonde")


def chosen_filters_set() -> bool:
    state = st.session_state
    keys = ("filter_docs", "filter_since", "filter_until", "filter_folder")
    return any(state.get(key) for key in keys)


def chosen_filters() -> Filters | None:
    """The sidebar's filters as ``Filters`` (``FilterError`` for a range that ends before
    it starts)."""
    state = st.session_state
    since, until = state.get("filter_since"), state.get("filter_until")
    return Filters.of(
        state.get("filter_docs"),
        since.isoformat() if since else None,
        until.isoformat() if until else None,
        state.get("filter_folder"),
    )


def documents_section(records: list[FileRecord], editor: bool) -> None:
    """What is indexed: each document's title, date, type, size, passages, who added it
    and when, in the chosen workspace; its editors remove one (after a confirmation)."""
    with st.expander(f"Documents ({len(records)})"):
        for record in records:
            st.markdown(document_line(record, escape_md))
            if editor:
                confirmed_button(
                    "Remove",
                    f"remove-doc-{record.id}",
                    f"Remove {escape_md(record.title)} from the index? Its passages go, and "
                    "an uploaded file is deleted.",
                    remove_document,
                    record.id,
                )


def remove_document(doc_id: str) -> None:
    """Remove a document (the workspace's editors, checked again here); the page says what
    was removed."""
    if not may_edit():
        st.session_state.notice = "Only an editor of this workspace may remove documents."
        return
    service = service_loading().result()
    try:
        record = service.remove_document(doc_id, scope(service))
    except RagError as exc:
        st.session_state.notice = str(exc)
        return
    st.toast(f"Removed {escape_md(record.title)} from the index")


def manage_users(admin: User) -> None:
    """Admins list, add and remove accounts (as ``rag user`` does); API keys stay on the CLI."""
    accounts = Accounts(get_settings())
    with st.expander("Users"):
        for other in accounts.list():
            cols = st.columns([3, 2])
            cols[0].markdown(f"{escape_md(other.name)} · {other.role}")
            if other.name != admin.name:  # an admin cannot lock themself out
                with cols[1]:
                    confirmed_button(
                        "Remove",
                        f"remove-{other.name}",
                        f"Remove {escape_md(other.name)} and their conversations? It cannot "
                        "be undone.",
                        remove_user,
                        other.name,
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


def confirmed_button(label: str, key: str, warning: str, action: Callable, arg: str) -> None:
    """A button that destroys something: the first click asks, the second acts."""
    if st.session_state.get("confirming") != key:
        st.button(label, key=key, on_click=st.session_state.__setitem__, args=("confirming", key))
        return
    st.warning(warning)
    yes, no = st.columns(2)
    yes.button("Yes", key=f"{key}-yes", type="primary", on_click=confirm, args=(action, arg))
    no.button("Cancel", key=f"{key}-no", on_click=st.session_state.pop, args=("confirming",))


def confirm(action: Callable, arg: str) -> None:
    st.session_state.pop("confirming", None)
    action(arg)


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
    require_edit()
    bar = st.progress(0.0, text="Indexing uploads…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Indexing uploads: {done / total:.0%}")

    limit_mb = service.settings.max_file_mb
    refused = [r for f in uploads if (r := upload_refusal(f.name, f.size, limit_mb))]
    fitting = [f for f in uploads if upload_refusal(f.name, f.size, limit_mb) is None]
    report = service.add_uploads(
        [(f.name, f.getvalue()) for f in fitting],
        progress=progress,
        added_by=st.session_state.get("user_name") or "",
        workspace=workspace(),
    )
    bar.empty()
    st.session_state.upload_errors = refused + page.upload_errors(report.failed)
    st.session_state.upload_report = report.summary()
    st.session_state.upload_added = report.added + report.updated + report.unchanged
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
    removed and the others renumbered once the stream ends. A question refused for its
    length goes back into the chat box (``refill_question``), so the typed text is kept.
    """
    from rag.service import QuestionError, check_question  # loaded by get_service

    require("reader")
    try:
        check_question(question)
    except QuestionError as exc:
        st.session_state.notice = str(exc)
        if question.strip():
            st.session_state.refill = question
        return
    messages = st.session_state.messages
    history = page.history(messages)
    asked = {"role": "user", "content": question}
    with st.chat_message("user"):
        st.html(author_label("user"))
        st.markdown(escape_md(question))
    top_k = st.session_state.get("top_k", service.settings.top_k)
    with st.chat_message("assistant"):
        st.html(author_label("assistant"))
        with st.spinner("Searching the documents…"):
            try:
                filters = chosen_filters()
                stream = service.ask_stream(
                    question, top_k, history, filters, scope(service), with_leads=True
                )
            except RagError as exc:
                messages.append(asked)
                st.error(str(exc))
                return
        msg = page.answer_message(show_stream(stream))
        if history and not service.settings.llm_enabled and is_follow_up(question):
            msg["hint"] = FOLLOW_UP_HINT
        messages += [asked, msg]
        render_answer_details(len(messages) - 1, msg, service)
    st.iframe(announcement_html(msg["content"]), height=1, alt=ANNOUNCE_TITLE)
    save_exchange(messages[-2:])


def refill_question() -> None:
    """Put a question refused for its length back into the chat box (which can only be
    filled before it is drawn), so the person can shorten it instead of typing it again."""
    if "refill" in st.session_state:
        st.session_state.question = st.session_state.pop("refill")


def show_waiting(pending: list[str]) -> DeltaGenerator:
    """Echo the questions sent while the index loads; emptied once it has loaded."""
    slot = st.empty()
    if pending:
        with slot.container():
            for question in pending:
                with st.chat_message("user"):
                    st.markdown(escape_md(question))
    return slot


def answer_pending(service: RagService) -> None:
    """Answer every question sent so far, oldest first.

    A question sent while the page runs stops that run and starts a new one: each question
    therefore waits in ``pending`` (kept across runs) until its answer is given, so one typed
    while the index loads, or while another is answered, is neither lost nor replaced.
    """
    pending = st.session_state.pending
    while pending:
        handle_question(pending[0], service)
        pending.pop(0)
    if st.session_state.get("notice"):
        st.rerun()  # shows why a question was refused, and puts it back into the chat box


def main() -> None:
    st.session_state.setdefault("messages", [])
    st.session_state.setdefault("pending", [])
    cookie_frame()
    user = current_user()  # stops at the sign-in form until someone signs in
    choose_workspace(user)
    uploads.allow(session_id(), may_edit())  # as edit_corpus shows
    st.title("Ask the documents")
    st.caption("Every answer quotes its sources; open a citation to check it in the original.")
    refill_question()
    # The chat box comes first: it shows, and takes a question, while the index loads.
    question = st.chat_input("Ask a question, in English or French", key="question")
    if question is not None:
        st.session_state.pending.append(question)
    if not st.session_state.get("focused"):  # until the first full run: never steal it later
        st.iframe(FOCUS_HTML, height=1, alt=FOCUS_TITLE)
    waiting = show_waiting(st.session_state.pending)
    service = get_service()
    ensure_index(service)
    waiting.empty()
    restore_conversation()
    for error in st.session_state.pop("upload_errors", []):
        st.error(error)
    if st.session_state.get("upload_report"):
        summary = st.session_state.pop("upload_report")
        if st.session_state.pop("upload_added", 1):
            st.info(f"Uploads indexed: {summary}")
        else:  # nothing new is searchable: not the "indexed" blue
            st.warning(f"No upload was indexed: {summary}")
    for i, msg in enumerate(st.session_state.messages):
        render_message(i, msg, service)
    if not st.session_state.messages and not st.session_state.pending:
        welcome(service)
    answer_pending(service)
    # Last, so that its status and export already include the answer just given.
    sidebar(service, user)
    st.session_state.focused = True


main()
