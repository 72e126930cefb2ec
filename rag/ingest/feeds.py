"""News sources: article pages and RSS/Atom feeds, fetched (``rag.ingest.web``) and indexed.

An article is stored as its page (decoded, written as UTF-8) in ``RAG_DATA_DIR/web/<key>.html``
with its metadata beside it (``<key>.json``) and indexed like any HTML file: trafilatura's
main text is what its citations quote, stored under ``extracted/`` as for the other
non-text formats. Its chunks carry ``url``, ``outlet``, ``author``, ``language`` and, when
the feed or the page gives one, ``date`` / ``date_int`` (the feed's date wins).

Invariants:

- One file per article: ``key`` hashes its canonical URL (the page's own
  ``<link rel="canonical">`` when it is on the same host, else the URL after redirects;
  without its fragment or ``utm_*`` parameters). That URL is only a name, never fetched.
- The file is rewritten only when the main text changes (its SHA-256), so a page whose ads
  or clock change is not indexed again; one whose text changed replaces its old chunks
  (same source, new content: the ingest's update).
- Registered feeds (the ``feeds`` table of the app database) and known articles are asked
  for with their ``ETag`` / ``Last-Modified``: an unchanged one answers 304 and costs nothing.
- Every item gets one line: ``added: URL``, ``updated: URL``, ``failed: URL: reason`` or
  ``skipped: URL: reason``; unchanged items are silent. A failure costs its item only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tqdm import tqdm

from rag.accounts.db import connect, db_path
from rag.config import DEFAULT_WORKSPACE, Settings
from rag.datadir import check_data_dir
from rag.documents.formats import FormatError, extract
from rag.errors import RagError
from rag.ingest.files import one_line
from rag.ingest.web import FEED_TYPES, PAGE_TYPES, Fetched, Fetcher, FetchError, http_url

if TYPE_CHECKING:
    from rag.index.records import FileRecord
    from rag.ingest.pipeline import IngestReport

WEB_FOLDER = "web"
# A first fetch of this many items or more shows a progress bar (on a terminal).
PROGRESS_FROM = 10
_FEED_ROOT = re.compile(rb"<(rss|feed|rdf:RDF)[\s>]")
# Feed roots appear after the XML declaration and comments; 4 KiB covers them.
FEED_SNIFF = 4096
Out = Callable[[str], None]


class Indexer(Protocol):
    """What news ingest needs of the service: its ingest and its manifest."""

    def ingest(
        self,
        paths: list[Path],
        *,
        metadata: dict[str, dict[str, Any]],
        workspace: str,
        show_progress: bool,
    ) -> IngestReport: ...

    def indexed_files(self) -> dict[str, FileRecord]: ...


class FeedError(RagError):
    """A feed command that cannot be done (an unknown feed, a URL that is not http(s))."""


@dataclass(frozen=True)
class Item:
    """An article to fetch: its link, and what its feed says of it."""

    link: str
    title: str = ""
    date: str = ""
    outlet: str = ""
    workspace: str = ""


@dataclass
class Run:
    """The articles of one run (stored file -> the link it came from) and how many items
    failed (each already reported on its line)."""

    paths: dict[Path, str] = field(default_factory=dict)
    failed: int = 0


def normalize(url: str) -> str:
    """``url`` without its fragment and ``utm_*`` parameters, scheme and host lower-case
    (a URL too broken to split is kept as it is: fetching it fails with the reason)."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return url.strip()
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    kept = urlencode([(k, v) for k, v in query if not k.lower().startswith("utm_")])
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), host.lower(), parts.path or "/", kept, ""))


def check_feed_url(url: str) -> str:
    """A feed URL as registered (normalized), or ``FeedError`` when it is not http(s)."""
    try:
        http_url(url)  # its addresses are checked at each fetch
    except FetchError as exc:
        raise FeedError(f"not a feed URL: {url} ({exc})") from None
    return normalize(url)


class Feeds:
    """The registered feeds (``feeds`` table of the app database)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def add(self, url: str, workspace: str | None = None) -> str:
        url = check_feed_url(url)
        with connect(self.settings) as conn:
            conn.execute(
                "INSERT INTO feeds (url, workspace, added) VALUES (?, ?, ?) "
                "ON CONFLICT (url) DO UPDATE SET workspace = excluded.workspace",
                (url, workspace or DEFAULT_WORKSPACE, time.time()),
            )
        return url

    def remove(self, url: str) -> str:
        url = check_feed_url(url)
        with connect(self.settings) as conn:
            if not conn.execute("DELETE FROM feeds WHERE url = ?", (url,)).rowcount:
                raise FeedError(f"no such feed: {url} (see `rag feed list`)")
        return url

    def list(self) -> list[dict[str, Any]]:
        with connect(self.settings) as conn:
            rows = conn.execute("SELECT * FROM feeds ORDER BY url").fetchall()
        return [dict(row) for row in rows]

    def checked(self, url: str, fetched: Fetched | None, status: str) -> None:
        """Remember a look at a feed: its validators (when it answered) and how it went."""
        with connect(self.settings) as conn:
            if fetched is not None and not fetched.not_modified:
                conn.execute(
                    "UPDATE feeds SET etag = ?, last_modified = ? WHERE url = ?",
                    (fetched.etag, fetched.last_modified, url),
                )
            conn.execute(
                "UPDATE feeds SET checked = ?, status = ? WHERE url = ?", (time.time(), status, url)
            )


def is_feed(fetched: Fetched) -> bool:
    """Whether a response is a feed: a feed media type, or XML whose root is a feed's."""
    if fetched.media_type in PAGE_TYPES:
        return False
    return fetched.media_type in FEED_TYPES[:4] or bool(
        _FEED_ROOT.search(fetched.body[:FEED_SNIFF])
    )


def feed_items(fetched: Fetched, workspace: str = "") -> list[Item]:
    """The items a feed lists, in its order; ``FetchError`` when it is not a readable feed."""
    import feedparser

    try:
        parsed = feedparser.parse(
            fetched.body, response_headers={"content-location": fetched.url, "content-type": "xml"}
        )
    except Exception as exc:  # the parser's crash costs this feed, never the run
        raise FetchError(f"malformed feed ({one_line(exc)})") from None
    outlet = str(parsed.feed.get("title", ""))
    items = []
    for entry in parsed.entries:
        link = entry.get("link")
        if link:
            stamp = entry.get("published_parsed") or entry.get("updated_parsed")
            day = time.strftime("%Y-%m-%d", stamp) if stamp else ""
            items.append(Item(link, str(entry.get("title", "")), day, outlet, workspace))
    if parsed.bozo and not items:  # feedparser reads what it can of a broken feed
        raise FetchError(f"malformed feed ({parsed.get('bozo_exception', 'unreadable')})")
    return items


class News:
    """One run of news ingest: URLs given by a user, or the registered feeds."""

    def __init__(
        self, settings: Settings, indexer: Indexer, out: Out, *, show_progress: bool = False
    ) -> None:
        self.settings = settings
        self.indexer = indexer
        self.out = out
        self.show_progress = show_progress
        self.root = settings.data_dir / WEB_FOLDER
        check_data_dir(settings.data_dir)  # marks a new one as ours before web/ goes in it
        self.links = _Links(self.root)

    def ingest_urls(self, urls: Iterable[str]) -> Run:
        """Each URL once: a page is an article, a feed gives its current items."""
        run = Run()
        with Fetcher(self.settings) as fetcher:
            items: list[Item] = []
            for url in urls:
                try:
                    fetched = fetcher.get(url, PAGE_TYPES + FEED_TYPES)
                    if is_feed(fetched):
                        items += self._capped(url, feed_items(fetched))
                    else:
                        run.paths[self._store(Item(url), fetched)] = url
                except (FetchError, FormatError) as exc:
                    self._failed(run, url, exc)
            self._fetch_items(fetcher, items, run)
        return self._index(run)

    def follow_feeds(self) -> Run:
        """One look at every registered feed (conditional requests)."""
        registry = Feeds(self.settings)
        run = Run()
        with Fetcher(self.settings) as fetcher:
            for feed in registry.list():
                try:
                    fetched = fetcher.get(
                        feed["url"],
                        FEED_TYPES,
                        etag=feed["etag"],
                        last_modified=feed["last_modified"],
                    )
                    items = [] if fetched.not_modified else feed_items(fetched, feed["workspace"])
                except FetchError as exc:
                    self._failed(run, feed["url"], exc)
                    registry.checked(feed["url"], None, str(exc))
                    continue
                self._fetch_items(fetcher, self._capped(feed["url"], items), run)
                registry.checked(feed["url"], fetched, "ok")
        return self._index(run)

    def _capped(self, feed: str, items: list[Item]) -> list[Item]:
        """The first ``RAG_FEED_MAX_ITEMS`` items; the others are reported as skipped."""
        cap = self.settings.feed_max_items
        for item in items[cap:]:
            self.out(
                f"skipped: {item.link}: over the {cap} items read per feed (RAG_FEED_MAX_ITEMS)"
            )
        return items[:cap]

    def _fetch_items(self, fetcher: Fetcher, items: list[Item], run: Run) -> None:
        bar = tqdm(
            items,
            desc="Fetching",
            unit="item",
            disable=not self.show_progress or len(items) < PROGRESS_FROM,
        )
        for item in bar:
            try:
                run.paths[self._article(fetcher, item)] = item.link
            except (FetchError, FormatError) as exc:
                self._failed(run, item.link, exc)

    def _failed(self, run: Run, url: str, exc: Exception) -> None:
        run.failed += 1
        self.out(f"failed: {url}: {exc}")

    def _article(self, fetcher: Fetcher, item: Item) -> Path:
        """The stored file of an item's article, fetched unless it answers 304."""
        known = self.links.get(item.link)
        path = self.root / f"{known.get('key', '')}.html"
        fetched = fetcher.get(
            item.link,
            PAGE_TYPES,
            etag=known.get("etag") if path.is_file() else None,
            last_modified=known.get("last_modified") if path.is_file() else None,
        )
        return path if fetched.not_modified else self._store(item, fetched)

    def _store(self, item: Item, fetched: Fetched) -> Path:
        """Write the article (when its main text changed) and its metadata; its path."""
        html = fetched.text()
        try:
            (part,), _ = extract(".html", html.encode("utf-8"), self.settings.max_text_chars)
            meta = page_metadata(html, fetched.url, item)
        except FormatError:
            raise
        except Exception as exc:  # an extractor's crash costs this article, never the run
            raise FormatError(f"cannot extract text ({one_line(exc)})") from None
        digest = hashlib.sha256(part.text.encode("utf-8")).hexdigest()
        key = hashlib.sha256(meta["url"].encode("utf-8")).hexdigest()[:24]
        path = self.root / f"{key}.html"
        sidecar = _read_json(path.with_suffix(".json"))
        self.root.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or sidecar.get("text_sha256") != digest:
            _write(path, html)
        _write(path.with_suffix(".json"), json.dumps({**meta, "text_sha256": digest}))
        self.links.set(item.link, key, fetched)
        return path

    def _index(self, run: Run) -> Run:
        """Index the run's articles in one ingest and print a line per changed one."""
        self.links.save()
        if not run.paths:
            return run
        metadata = {str(p.resolve()): chunk_metadata(p) for p in run.paths}
        before = self.indexer.indexed_files()
        failed: dict[str, str] = {}
        for workspace, paths in _by_workspace(run.paths, metadata).items():
            report = self.indexer.ingest(
                paths, metadata=metadata, workspace=workspace, show_progress=self.show_progress
            )
            failed.update(report.failed)
        after = self.indexer.indexed_files()
        for path, url in run.paths.items():
            source = str(path.resolve())
            if source in failed or str(path) in failed:
                self._failed(run, url, RagError(failed.get(source) or failed[str(path)]))
            elif source not in before and source in after:
                self.out(f"added: {url}")
            elif source in after and before[source].sha256 != after[source].sha256:
                self.out(f"updated: {url}")
        return run


def _by_workspace(
    paths: Iterable[Path], metadata: dict[str, dict[str, Any]]
) -> dict[str, list[Path]]:
    """The stored articles grouped by the workspace their feed sends them to: one ingest
    each, so their records and chunks are labelled with it (``rag.ingest.pipeline``)."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        workspace = metadata[str(path.resolve())].get("workspace") or DEFAULT_WORKSPACE
        groups.setdefault(str(workspace), []).append(path)
    return groups


def page_metadata(html: str, url: str, item: Item) -> dict[str, str]:
    """An article's canonical URL, title, outlet, author, language and date (the feed's
    title and date first, then the page's own), empty values left out."""
    import trafilatura

    found = trafilatura.extract_metadata(html, default_url=url)
    canonical = normalize(url)
    declared = (found.url or "") if found else ""
    if declared and urlsplit(declared).hostname == urlsplit(url).hostname:
        canonical = normalize(declared)
    lang = re.search(r"<html[^>]*\blang\s*=\s*[\"']?([A-Za-z-]+)", html[:4096], re.IGNORECASE)
    meta = {
        "url": canonical,
        "title": item.title or (found.title if found else "") or "",
        "outlet": (found.sitename if found else "") or item.outlet or urlsplit(url).hostname,
        "author": (found.author if found else "") or "",
        "language": lang.group(1).lower() if lang else "",
        "date": item.date or (found.date if found else "") or "",
        "workspace": item.workspace,
    }
    return {key: str(value) for key, value in meta.items() if value}


def chunk_metadata(path: Path) -> dict[str, Any]:
    """What every chunk of a stored article carries (``date_int`` beside ``date``)."""
    meta: dict[str, Any] = _read_json(path.with_suffix(".json"))
    meta.pop("text_sha256", None)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", meta.get("date", "")):
        meta["date_int"] = int(meta["date"].replace("-", ""))
    else:
        meta.pop("date", None)
    return meta


class _Links:
    """Known article links: which stored article each one gave, and its validators."""

    def __init__(self, root: Path) -> None:
        self.path = root / "links.json"
        self.known: dict[str, dict[str, str]] = _read_json(self.path)

    def get(self, link: str) -> dict[str, str]:
        return self.known.get(normalize(link), {})

    def set(self, link: str, key: str, fetched: Fetched) -> None:
        found = {"key": key, "etag": fetched.etag, "last_modified": fetched.last_modified}
        self.known[normalize(link)] = {k: v for k, v in found.items() if v}

    def save(self) -> None:
        if self.known:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write(self.path, json.dumps(self.known))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a reader sees the old or the new file)."""
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Follower:
    """Looks at the registered feeds every ``RAG_FEED_INTERVAL`` seconds, for the watcher
    (``rag ingest --watch``) and the app; a failure is reported and tried again next time."""

    def __init__(self, settings: Settings, indexer: Indexer, out: Out) -> None:
        self.settings = settings
        self.indexer = indexer
        self.out = out
        self.next = 0.0

    def due(self) -> None:
        """Look at the feeds if the interval has passed since the last look."""
        if time.monotonic() < self.next:
            return
        self.next = time.monotonic() + self.settings.feed_interval
        try:
            if db_path(self.settings).exists() and Feeds(self.settings).list():
                News(self.settings, self.indexer, self.out).follow_feeds()
        except RagError as exc:
            self.out(f"failed: feeds: {exc}")

    def run(self, stop: threading.Event) -> None:
        """Look at the feeds now and at every interval until ``stop`` is set."""
        while not stop.is_set():
            self.due()
            stop.wait(max(0.0, self.next - time.monotonic()))
