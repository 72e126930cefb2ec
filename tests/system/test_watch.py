"""``rag ingest --watch``: a real watcher process follows a folder while another process asks."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchfiles import Change

from rag.ingest.watch import MAX_ATTEMPTS, Step, WatchFilter, settled
from rag.service import RagService
from tests.conftest import ROOT, make_settings, run_cli
from tests.integration.test_documents import word_file
from tests.procs import child_env

PISA = "De combien de degrés la tour de Pise penche-t-elle ?"


class Watcher:
    """``rag ingest --watch`` in its own process, its output lines collected as they come."""

    def __init__(self, folder: Path, data_dir: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "ingest", "--watch", str(folder)],
            cwd=ROOT,
            env=child_env(data_dir, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 120) -> None:
        until(lambda: any(line.startswith(prefix) for line in self.lines), timeout, self.lines)


def until(check: Callable[[], bool], timeout: float = 30, context: object = None) -> None:
    """Poll ``check`` until it holds; the watcher is expected to act within seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {context}"
        time.sleep(0.3)


def cited(service: RagService, question: str) -> str:
    """The quotes of the answer to ``question``, joined (empty when it abstains)."""
    return " / ".join(c.quote for c in service.ask(question).citations)


def test_watch_follows_adds_changes_and_deletes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lac.txt").write_text("Le lac de Grand-Lieu couvre 6300 hectares en hiver.\n")
    data = tmp_path / "data"
    watcher = Watcher(docs, data)
    try:
        watcher.wait_for("1 added")
        reader = RagService(make_settings(data))  # like an app asking meanwhile

        pisa = docs / "pise.txt"
        pisa.write_text("La tour de Pise penche de 4 degrés vers le sud.\n")
        for temporary in (".#pise.txt", "pise.txt~", "~pise.txt", ".pise.txt.swp", "a.tmp"):
            (docs / temporary).write_text("La tour de Pise penche de 99 degrés.\n")
        until(lambda: "4 degrés" in cited(reader, PISA), context=watcher.lines)

        pisa.write_text("La tour de Pise penche de 5 degrés depuis sa restauration.\n")
        until(lambda: "5 degrés" in cited(reader, PISA), context=watcher.lines)
        assert "4 degrés" not in cited(reader, PISA)

        # Written in two goes a second apart: the first half fails to parse and is retried.
        word = word_file()
        bridge = docs / "ponts.docx"
        bridge.write_bytes(word[: len(word) // 2])
        time.sleep(1.5)
        bridge.write_bytes(word)
        until(lambda: str(bridge) in reader.indexed_files(), context=watcher.lines)

        pisa.unlink()
        until(lambda: str(pisa) not in reader.indexed_files(), context=watcher.lines)
        assert "Pise" not in cited(reader, PISA)

        files = reader.indexed_files()
        assert sorted(Path(source).name for source in files) == ["lac.txt", "ponts.docx"]
        chunks = reader.store.all_chunks()
        spans = [(c.meta["source"], c.meta.get("page"), c.meta["start"]) for c in chunks]
        assert len(set(spans)) == len(spans) == sum(f.chunks for f in files.values())
        assert f"added: {pisa} (1 chunks)" in watcher.lines
        assert f"updated: {pisa} (1 chunks)" in watcher.lines
        assert f"removed: {pisa}" in watcher.lines
        assert any(line.startswith(f"added: {bridge}") for line in watcher.lines)
    finally:
        watcher.proc.send_signal(signal.SIGINT)
        _, err = watcher.proc.communicate(timeout=60)
    assert watcher.proc.returncode == 130, err
    assert "Traceback" not in err
    again = run_cli("ingest", str(docs), data_dir=data)
    assert again.returncode == 0, again.stderr
    assert "0 added, 0 updated, 2 unchanged, 0 failed, 0 pruned; 0 chunks embedded" in again.stdout


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("rapport.docx", True),
        ("notes.md", True),
        ("scan.PDF", True),
        (".#notes.md", False),
        ("~$rapport.docx", False),
        ("notes.md~", False),
        (".notes.md.swp", False),
        ("notes.md.tmp", False),
        ("rapport.docx.part", False),
        ("image.png", False),
    ],
)
def test_watch_filter_keeps_documents_only(tmp_path: Path, name: str, kept: bool) -> None:
    data = tmp_path / "data"
    check = WatchFilter(ignore_paths=[data])
    assert check(Change.added, str(tmp_path / name)) is kept
    assert not check(Change.added, str(data / "extracted" / "abc" / "text.txt"))


def test_a_half_written_file_waits_and_a_failed_parse_is_retried(
    tmp_path: Path, service: RagService
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    growing = docs / "growing.txt"
    growing.write_text("Le début d'un long fichier.\n")
    stop = threading.Event()

    def append() -> None:
        with growing.open("a") as fh:
            while not stop.is_set():
                fh.write("Une ligne de plus.\n")
                fh.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        assert settled([growing]) == ([], [growing])
    finally:
        stop.set()
        writer.join()
    assert settled([growing]) == ([growing], [])

    lines: list[str] = []
    step = Step(service, lines.append)
    word = word_file()
    bridge = docs / "ponts.docx"
    bridge.write_bytes(word[: len(word) // 2])
    waiting = step.follow({bridge}, {}, prune=False)
    assert waiting == {bridge: 1}
    assert lines[-1].startswith(f"retrying: {bridge}: corrupt or unreadable Word file")
    for attempt in range(2, MAX_ATTEMPTS):
        waiting = step.follow(set(), waiting, prune=False)
        assert waiting == {bridge: attempt}
    assert step.follow(set(), waiting, prune=False) == {}
    assert lines[-1].startswith(f"failed: {bridge}: ")  # given up until it changes again

    bridge.write_bytes(word)
    assert step.follow({bridge}, {}, prune=False) == {}
    assert lines[-1].startswith(f"added: {bridge} (")
