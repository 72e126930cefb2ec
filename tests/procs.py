"""Helpers for tests that start local server processes (Streamlit, Chroma)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a product process a test starts: this one's, without its ``RAG_*``
    and ``OPENAI_*`` settings (a developer's own must not leak in), with ``data_dir`` and
    ``extra`` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    return {**env, "RAG_DATA_DIR": str(data_dir), **extra}


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a server process, killing it if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
