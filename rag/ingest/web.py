"""Fetching web pages and feeds, safely: the one place the product reads from the network.

Invariants, for every request (a page, a feed, a robots.txt):

- ``http`` and ``https`` only; the host is resolved and every address it has is checked
  before the request, and the address actually connected to is checked again before a byte
  of the body is read (a name that resolves elsewhere the second time is caught there).
  Private, loopback, link-local, multicast, reserved and unspecified addresses are refused
  unless ``RAG_FETCH_ALLOW_PRIVATE`` is set: a feed must not make the server read its own
  network.
- Redirects are followed here, one by one, at most ``RAG_FETCH_MAX_REDIRECTS``, each target
  checked as the first URL was (scheme, addresses, robots.txt); a URL seen twice is a loop.
- Timeouts: ``RAG_FETCH_TIMEOUT`` to connect and between two reads, four times that for the
  whole response (a server dripping a byte at a time is stopped too).
- The body is streamed and stopped past ``RAG_FETCH_MAX_MB``, announced or not; it is never
  held whole before the check.
- The media type must be one the caller reads (pages: HTML; feeds: RSS, Atom, XML).
- robots.txt is read once per host per ``Fetcher`` and obeyed for ``ROBOTS_AGENT``
  (RFC 9309: a 4xx means no rules, a 5xx means nothing may be fetched; a host that does
  not answer for it is not fetched from either).
- Requests name the product (``USER_AGENT``) and never send cookies or credentials.

Nothing here looks inside a document for URLs: callers pass the URLs to fetch (a user's, a
registered feed's, the items a feed lists), and a link inside a page is never followed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from rag.config import Settings
from rag.errors import RagError

USER_AGENT = "rag-news/1.0 (cited answers over French news; robots.txt obeyed)"
ROBOTS_AGENT = "rag-news"
PAGE_TYPES = ("text/html", "application/xhtml+xml")
FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/rdf+xml",
    "application/feed+xml",
    "application/xml",
    "text/xml",
)
# robots.txt files are small (Google reads the first 500 KiB); a bigger one is ignored.
ROBOTS_MAX_BYTES = 512 * 1024
# A response may take this many times RAG_FETCH_TIMEOUT in all.
WHOLE_RESPONSE_TIMEOUTS = 4
MB = 1024 * 1024
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
# Where an HTML page may declare its encoding (the HTML standard's prescan reads 1024 bytes).
CHARSET_PRESCAN = 1024


class FetchError(RagError):
    """A URL that could not be fetched; the message is the reason, fit for a ``failed:`` line."""


@dataclass(frozen=True)
class Fetched:
    """A response: the final URL (after redirects), its media type and body, and the
    validators for the next conditional request. ``not_modified``: a 304, no body."""

    url: str
    media_type: str = ""
    charset: str | None = None
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False

    def text(self) -> str:
        """The body decoded: the declared charset (header, else an HTML ``<meta>``), else
        UTF-8, else Windows-1252 (which French pages without a declaration mostly are)."""
        for charset in (self.charset, _meta_charset(self.body)):
            if charset:
                try:
                    return self.body.decode(charset)
                except (LookupError, UnicodeDecodeError):
                    continue
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return self.body.decode("cp1252", errors="replace")


def _meta_charset(body: bytes) -> str | None:
    found = _CHARSET.search(body[:CHARSET_PRESCAN])
    return found.group(1).decode("ascii") if found else None


def http_url(url: str) -> SplitResult:
    """The parts of an http(s) URL with a host, or ``FetchError`` saying what is wrong."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise FetchError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parts.scheme or 'this'}")
    if not parts.hostname:
        raise FetchError("the URL has no host")
    return parts


def check_url(url: str, allow_private: bool) -> None:
    """Refuse (``FetchError``) a URL that is not http(s), has no host, or whose host has an
    address this product must not reach."""
    parts = http_url(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot resolve {parts.hostname} ({exc})") from None
    for info in infos:
        check_address(str(info[4][0]), allow_private)


def check_address(address: str, allow_private: bool) -> None:
    """Refuse a private, loopback, link-local, multicast, reserved or unspecified address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if allow_private or (ip.is_global and not ip.is_multicast):  # 224/4 counts as global
        return
    raise FetchError(
        f"refused: {ip} is a private, loopback or reserved address (RAG_FETCH_ALLOW_PRIVATE)"
    )


class Fetcher:
    """One client for a run of requests (connections and robots.txt rules are reused)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = httpx.Client(
            timeout=httpx.Timeout(settings.fetch_timeout),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,  # no proxy or .netrc credentials from the environment
        )
        self._robots: dict[str, RobotFileParser] = {}

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def get(
        self,
        url: str,
        accept: Collection[str],
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> Fetched:
        """``url`` fetched under the module's rules, its media type one of ``accept``; a
        304 (with ``etag`` / ``last_modified`` sent) comes back as ``not_modified``."""
        headers = {"Accept": ", ".join(accept) + ", */*;q=0.1"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        return self._follow(url, accept, headers, robots=True)

    def _follow(
        self, url: str, accept: Collection[str], headers: dict[str, str], *, robots: bool
    ) -> Fetched:
        """Redirects followed one by one, each target checked like the first URL."""
        seen: set[str] = set()
        for _ in range(self.settings.fetch_max_redirects + 1):
            if url in seen:
                raise FetchError("redirect loop")
            seen.add(url)
            check_url(url, self.settings.fetch_allow_private)
            if robots and not self._robots_allow(url):
                raise FetchError("disallowed by the site's robots.txt")
            with self._response(url, headers) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                return self._read(url, response, accept)
        raise FetchError(
            f"too many redirects (over {self.settings.fetch_max_redirects}, "
            "RAG_FETCH_MAX_REDIRECTS)"
        )

    @contextmanager
    def _response(self, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """The streamed response, its peer address checked; network errors as ``FetchError``."""
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                stream = response.extensions.get("network_stream")
                peer = stream.get_extra_info("server_addr") if stream is not None else None
                if peer:
                    check_address(str(peer[0]), self.settings.fetch_allow_private)
                yield response
        except httpx.TimeoutException:
            raise FetchError(
                f"timed out (no answer within {self.settings.fetch_timeout:g} s, RAG_FETCH_TIMEOUT)"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(f"cannot fetch ({type(exc).__name__}: {exc})") from None

    def _read(self, url: str, response: httpx.Response, accept: Collection[str]) -> Fetched:
        """The body of a final response, checked for status, media type and size."""
        if response.status_code == 304:
            return Fetched(url, not_modified=True)
        if response.status_code >= 400:
            raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
        media, _, params = response.headers.get("content-type", "").partition(";")
        media = media.strip().lower()
        if accept and media not in accept:
            raise FetchError(f"not a page or feed (content type {media or 'missing'})")
        charset = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.IGNORECASE)
        return Fetched(
            url,
            media,
            charset.group(1) if charset else None,
            self._body(response),
            response.headers.get("etag"),
            response.headers.get("last-modified"),
        )

    def _body(self, response: httpx.Response, cap: int | None = None) -> bytes:
        """The body, streamed and stopped past the size cap or the whole-response timeout."""
        cap = cap or int(self.settings.fetch_max_mb * MB)
        too_large = FetchError(
            f"too large (over {self.settings.fetch_max_mb:g} MB, RAG_FETCH_MAX_MB)"
        )
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > cap:
            raise too_large
        deadline = time.monotonic() + WHOLE_RESPONSE_TIMEOUTS * self.settings.fetch_timeout
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise too_large
            if time.monotonic() > deadline:
                raise FetchError("too slow (the response did not end in time, RAG_FETCH_TIMEOUT)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _robots_allow(self, url: str) -> bool:
        """Whether the host's robots.txt lets ``ROBOTS_AGENT`` fetch ``url`` (read once)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        return self._robots[origin].can_fetch(ROBOTS_AGENT, url)

    def _read_robots(self, origin: str) -> RobotFileParser:
        """The rules of ``origin``: a 4xx (or a redirect, not followed) means none, a 5xx
        that nothing may be fetched (RFC 9309); a host that does not answer fails the fetch
        with its own reason (a timeout, a refused connection or address)."""
        rules = RobotFileParser(origin + "/robots.txt")
        with self._response(origin + "/robots.txt", {}) as response:  # no answer: FetchError
            status = response.status_code
            body = self._body(response, ROBOTS_MAX_BYTES) if status < 300 else b""
        if status >= 500:
            rules.disallow_all = True
        elif status >= 300:
            rules.allow_all = True
        else:
            rules.parse(body.decode("utf-8", errors="replace").splitlines())
        return rules
