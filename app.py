"""The Streamlit app: ``streamlit run app.py`` serves the chat page, chat.py.

Streamlit runs a page script only once a browser has connected, so the first visitor would
also wait for the imports and the embedding model. This entry point starts loading them in
a background thread as soon as the server starts, while the browser loads the page.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

PAGE = Path(__file__).resolve().parent / "chat.py"
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


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    from rag.config import get_settings

    skip_repl_check()
    threading.Thread(target=warm_up, name="rag-warm-up", daemon=True).start()
    stop = threading.Event()
    folder = get_settings().watch_dir
    if folder:
        threading.Thread(
            target=watch_folder, args=(folder, stop), name="rag-watch", daemon=True
        ).start()
    yield
    stop.set()


app = st.App(str(PAGE), lifespan=lifespan)
