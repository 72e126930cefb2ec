"""Folder sync: keep the index in step with folders while they change (``rag ingest --watch``).

Each burst of file-system events (grouped by ``watchfiles`` until ``QUIET_MS`` pass without
one) becomes one incremental ingest of the touched files, with ``prune`` when something was
deleted, so the index is always what a plain ``rag ingest --prune`` would give, and the
crash-safety of ingest holds for every step. What changed is printed per file, read off the
manifest before and after the step.

Editors' temporary files (``rag.documents.formats.is_temporary``, which ingest skips too) and
unsupported types are ignored. A file whose size or modification time still changes over
``SETTLE_S`` is being written: it waits for its next event or the next ``RETRY_MS`` tick. A
file that fails to parse may be half-written too: it is tried again at the next ticks, up to
``MAX_ATTEMPTS`` times, then reported as failed until it changes again.

Registered feeds (``rag feed add``) are looked at between two steps, every
``RAG_FEED_INTERVAL`` seconds (``rag.ingest.feeds.Follower``): the file events keep their
order, and a feed's items are indexed by the same one writer.

``stop`` (a ``threading.Event``) ends the loop between two steps, never inside one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from watchfiles import Change, DefaultFilter
from watchfiles import watch as watch_changes

from rag.documents.formats import SUPPORTED_SUFFIXES, is_temporary
from rag.ingest.feeds import Follower

if TYPE_CHECKING:
    from rag.index.records import FileRecord
    from rag.service import RagService

# Events are grouped until this long passes without a new one: a save by an editor (write
# temp, rename, chmod) or a `cp -r` of a folder arrives as one step, not dozens.
QUIET_MS = 400
# watchfiles' upper bound on one group, so a never-ending trickle still gets indexed.
MAX_GROUP_MS = 3000
# Time between the two looks at a file's size and mtime: a copy in progress shows growth.
SETTLE_S = 0.25
# How often files waiting for a retry are looked at again when no event comes.
RETRY_MS = 2000
MAX_ATTEMPTS = 3

Out = Callable[[str], None]
Stamp = tuple[int, int] | None


class WatchFilter(DefaultFilter):
    """Supported documents only: no editor temporaries, nothing under the data dir."""

    def __call__(self, change: Change, path: str) -> bool:
        target = Path(path)
        if not super().__call__(change, path) or is_temporary(target.name):
            return False
        return (
            target.suffix.lower() in SUPPORTED_SUFFIXES
            or change == Change.deleted  # a deleted folder has no suffix either
            or target.is_dir()
        )


def watch(
    paths: Iterable[Path], service: RagService, stop: threading.Event, out: Out = print
) -> None:
    """Index ``paths`` (pruning deleted files), then follow their changes until ``stop``;
    the registered feeds are looked at every ``RAG_FEED_INTERVAL`` seconds meanwhile."""
    roots = [path.resolve() for path in paths]
    report = Step(service, out).run(roots, prune=True)
    out(f"{report.summary()}; watching {', '.join(map(str, roots))}")
    feeds = Follower(service.settings, service, out)
    feeds.due()
    waiting: dict[Path, int] = {}  # files to look at again, with their failed attempts
    for changes in watch_changes(
        *roots,
        watch_filter=WatchFilter(ignore_paths=[service.settings.data_dir.resolve()]),
        debounce=MAX_GROUP_MS,
        step=QUIET_MS,
        stop_event=stop,
        rust_timeout=RETRY_MS,
        yield_on_timeout=True,
        raise_interrupt=False,
    ):
        touched = {Path(path) for _, path in changes}
        for path in touched:
            waiting.pop(path, None)  # a new change: a fresh set of attempts
        deleted = any(change == Change.deleted for change, _ in changes)
        if touched or waiting or deleted:
            waiting = Step(service, out, roots).follow(touched, waiting, prune=deleted)
        feeds.due()


class Step:
    """One incremental ingest and the per-file lines that say what it changed; a changed
    file's path is shown relative to the watched folder (``roots``) that holds it."""

    def __init__(self, service: RagService, out: Out, roots: list[Path] | None = None) -> None:
        self.service = service
        self.out = out
        self.roots = roots or []

    def run(self, paths: list[Path], *, prune: bool):
        before = self.service.indexed_files()
        report = self.service.ingest(paths, prune=prune, show_progress=False)
        self._print_changes(before, self.service.indexed_files())
        for path, reason in report.failed:
            self.out(f"failed: {path}: {reason}")
        return report

    def follow(
        self, touched: set[Path], waiting: dict[Path, int], *, prune: bool
    ) -> dict[Path, int]:
        """Ingest what settled among the touched and waiting files; return those to look at
        again, with their failed attempts so far."""
        ready, busy = settled(path for path in touched | set(waiting) if path.exists())
        later = {path: waiting.get(path, 0) for path in busy}
        before = self.service.indexed_files()
        report = (
            self.service.ingest(ready, prune=prune, show_progress=False, roots=self.roots)
            if ready or prune
            else None
        )
        self._print_changes(before, self.service.indexed_files())
        for path, reason in report.failed if report else []:
            attempts = waiting.get(Path(path), 0) + 1
            if not Path(path).exists():
                continue  # deleted meanwhile: the deletion event prunes it
            if attempts < MAX_ATTEMPTS:
                later[Path(path)] = attempts
                self.out(f"retrying: {path}: {reason}")
            else:
                self.out(f"failed: {path}: {reason}")
        return later

    def _print_changes(self, before: dict[str, FileRecord], after: dict[str, FileRecord]) -> None:
        for source in sorted(before.keys() | after.keys()):
            old, new = before.get(source), after.get(source)
            if new is None:
                self.out(f"removed: {source}")
            elif old is None:
                self.out(f"added: {source} ({new.chunks} chunks)")
            elif old.sha256 != new.sha256:
                self.out(f"updated: {source} ({new.chunks} chunks)")


def settled(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into those not being written (same size and mtime twice) and the rest."""
    first = {path: _stamp(path) for path in paths}
    if any(path.is_file() for path in first):
        time.sleep(SETTLE_S)
    ready = [path for path, stamp in first.items() if path.is_dir() or _stamp(path) == stamp]
    return sorted(ready), sorted(set(first) - set(ready))


def _stamp(path: Path) -> Stamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
