"""The Streamlit app: ``streamlit run app.py`` serves the chat page, chat.py.

Streamlit runs a page script only once a browser has connected, so the first visitor would
also wait for the imports and the embedding model. This entry point starts loading them in
a background thread as soon as the server starts, while the browser loads the page.

Every request, the page's websocket included, first passes ``PageGuard``, before any
question can be asked or conversation read:
- a foreign ``Host`` or ``Origin`` is refused (403; ``rag.security.foreign_request``);
- a server bound beyond loopback with no account (and no single sign-on) is refused (403),
  unless ``RAG_ALLOW_OPEN_PAGE`` says otherwise, as ``rag serve`` refuses to start;
- a file upload is refused unless the page showed this session the upload widget
  (``rag.ui.uploads``): Streamlit would otherwise hold any session's uploads in memory;
- ``/_rag/session`` (``rag.ui.session.ROUTE``), loaded by the page's hidden frame after a
  sign-in, is answered here with the session cookie for a valid handoff code;
- the client address the page counts failed sign-ins by (``st.context.ip_address``) is
  replaced by ``rag.security.client_key``'s, which believes ``X-Forwarded-For`` only from
  ``RAG_TRUSTED_PROXIES`` (a malformed value is answered with a 500 that names it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose
from streamlit import config as st_config

PAGE = Path(__file__).resolve().parent / "chat.py"
SESSION_ROUTE = "/_rag/session"  # rag.ui.session.ROUTE, without importing rag here
log = logging.getLogger(__name__)


def skip_repl_check() -> None:
    """Skip the check behind Streamlit's "use streamlit run" warning, moot under a server.

    Streamlit makes it on the first element of the process with ``inspect.stack()``, which
    resolves the path of every loaded module: with LlamaIndex and Chroma loading beside it,
    that delayed the first page by about a second (measured with benchmarks.app_browser).
    """
    from streamlit import delta_generator

    delta_generator._use_warning_has_been_displayed = True


def warm_up() -> None:
    """Import the package, load the model and open the index; the page reports any error."""
    try:
        from rag.config import get_settings
        from rag.service import shared_service

        shared_service(get_settings()).warm_up()
    except Exception as exc:
        log.warning("warm-up skipped: %s", exc)


def watch_folder(folder: Path, stop: threading.Event) -> None:
    """Keep ``RAG_WATCH_DIR`` indexed while the server runs; its console shows each change."""
    try:
        from rag.config import get_settings
        from rag.ingest.watch import watch
        from rag.service import shared_service

        watch(
            [folder], shared_service(get_settings()), stop, out=lambda line: print(line, flush=True)
        )
    except Exception as exc:
        log.warning("folder watch stopped: %s", exc)


def follow_feeds(stop: threading.Event) -> None:
    """Keep the registered feeds (``rag feed add``) indexed while the server runs."""
    try:
        from rag.config import get_settings
        from rag.ingest.feeds import Follower
        from rag.service import shared_service

        settings = get_settings()
        Follower(settings, shared_service(settings), lambda line: print(line, flush=True)).run(stop)
    except Exception as exc:
        log.warning("feed following stopped: %s", exc)


def bind_address() -> str:
    """The address the server listens on (``server.address``; unset means every one)."""
    return str(st_config.get_option("server.address") or "")


def server_forwarding_trust() -> list:
    """The peers whose ``X-Forwarded-For`` uvicorn, below Streamlit, already applied to the
    client address it passes on: its ``FORWARDED_ALLOW_IPS``, read as uvicorn reads it
    (Streamlit gives it no setting); every address when it does not parse."""
    from rag.security import networks, split_list

    try:
        return networks(split_list(os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")))
    except ValueError:
        return networks(["*"])


def open_page_refusal() -> str | None:
    """Why the page must not be served at all now, or None (see the module docstring)."""
    from rag.accounts.users import Accounts
    from rag.config import get_settings
    from rag.security import is_loopback

    settings, address = get_settings(), bind_address()
    if is_loopback(address) or settings.allow_open_page:
        return None
    if (st.secrets.load_if_toml_exists() and "auth" in st.secrets) or Accounts(settings).enabled():
        return None
    return (
        f"Refusing to serve this page on {address or 'every address'} with no account: anyone "
        "who reaches it could read the documents. Add one with `rag user add NAME --role "
        "admin`, serve on 127.0.0.1, or set RAG_ALLOW_OPEN_PAGE=true."
    )


def foreign_refusal(scope: Scope, headers: Headers) -> str | None:
    """Why a request that names another site (DNS rebinding, a cross-site page) is refused."""
    from rag.config import get_settings
    from rag.security import foreign_request, host_name, is_wildcard, split_list

    allowed = set(split_list(get_settings().allowed_hosts))
    for address in (bind_address(), (scope.get("server") or ("",))[0] or ""):
        if not is_wildcard(address):
            allowed.add(address.lower())
    if not foreign_request(headers.get("host", ""), headers.get("origin"), allowed):
        return None
    return (
        f"This page answers only to its own address, not to {host_name(headers.get('host', ''))!r}"
        " or a page from another site: open it at the address it is served on, or add the "
        "name to RAG_ALLOWED_HOSTS."
    )


def with_client_key(scope: Scope, headers: Headers) -> Scope:
    """The scope with the client address failed sign-ins are counted by (``client_key``)."""
    from rag.config import get_settings
    from rag.security import client_key, networks, split_list

    client = scope.get("client") or ("unknown", 0)
    forwarded = ", ".join(headers.getlist("x-forwarded-for")) or None
    proxies = networks(split_list(get_settings().trusted_proxies))
    key = client_key(client[0], forwarded, proxies, server_forwarding_trust())
    return {**scope, "client": (key, client[1])}


def upload_refusal(scope: Scope) -> str | None:
    """Why a file upload is refused: its session was not shown the upload widget."""
    from rag.ui import uploads

    _, marker, rest = scope["path"].partition("/_stcore/upload_file/")
    if scope["type"] != "http" or not marker or scope["method"] != "PUT":
        return None
    if uploads.allowed(rest.split("/", 1)[0]):
        return None
    return "Sign in with a role that may add documents before uploading."


async def session_cookie(scope: Scope, receive: Receive, send: Send) -> None:
    """The session cookie for the handoff code in the query (``rag.ui.session``), or a 404."""
    from rag.config import get_settings
    from rag.ui import session

    code = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("n", [""])[0]
    held = Request(scope).cookies.get(session.COOKIE, "")  # a second load of the frame
    claimed = await run_in_threadpool(session.claim, get_settings(), code, held) if code else None
    if claimed is None:
        response = PlainTextResponse("This sign-in code is unknown, used or expired.", 404)
    else:  # a page, not a 204: a frame's navigation that gets no content is cancelled
        token, max_age = claimed
        cookie = session.cookie_header(token, max_age, secure=scope.get("scheme") == "https")
        headers = {"set-cookie": cookie, "cache-control": "no-store"}
        response = HTMLResponse("<!doctype html><title>Signed in</title>", headers=headers)
    await response(scope, receive, send)


class PageGuard:
    """ASGI middleware in front of every Streamlit route (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers, status = Headers(scope=scope), 403
        refusal = (
            foreign_refusal(scope, headers)
            or upload_refusal(scope)
            or await run_in_threadpool(open_page_refusal)
        )
        try:
            scope = with_client_key(scope, headers)
        except ValueError as exc:
            refusal, status = refusal or f"RAG_TRUSTED_PROXIES: {exc}", 500
        if refusal is None and scope["type"] == "http" and scope["path"].endswith(SESSION_ROUTE):
            await session_cookie(scope, receive, send)
        elif refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008, reason=refusal[:120])(scope, receive, send)
        else:
            await PlainTextResponse(refusal, status_code=status)(scope, receive, send)


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    from rag.config import get_settings

    skip_repl_check()
    refusal = await run_in_threadpool(open_page_refusal)
    if refusal:
        log.warning(refusal)
    threading.Thread(target=warm_up, name="rag-warm-up", daemon=True).start()
    stop = threading.Event()
    folder = get_settings().watch_dir
    if folder:
        threading.Thread(
            target=watch_folder, args=(folder, stop), name="rag-watch", daemon=True
        ).start()
    threading.Thread(target=follow_feeds, args=(stop,), name="rag-feeds", daemon=True).start()
    yield
    stop.set()


app = st.App(str(PAGE), lifespan=lifespan, middleware=[Middleware(PageGuard)])
