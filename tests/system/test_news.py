"""Web articles and RSS/Atom feeds, fetched by ``rag`` from a local web server the tests start
(loopback only, ``http.server`` in a thread): French articles indexed and cited with their URL,
each article once, an updated one replacing its old chunks, every fault reported on its item's
line with a reason while the rest is indexed, and loopback refused unless allowed."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rag.ingest.feeds import News, normalize
from rag.ingest.web import Fetcher, FetchError, check_address, check_url
from rag.service import RagService
from rag.ui.render import citation_origin
from tests.conftest import make_settings, run_cli
from tests.system.test_watch import Watcher, until

ALLOW = {"RAG_FETCH_ALLOW_PRIVATE": "1", "RAG_FETCH_TIMEOUT": "3", "RAG_FEED_MAX_ITEMS": "100"}
BIG_MB = 50


def article(title: str, body: str, *, lang: str = "fr", charset: str = "utf-8") -> str:
    """A news page: navigation and footer around the article, as outlets serve them."""
    paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n"))
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="{charset}">'
        f"<title>{title} | Le Courrier du Doubs</title>"
        '<meta name="author" content="Claire Vuillemin">'
        '<meta property="og:site_name" content="Le Courrier du Doubs"></head><body>'
        '<nav><a href="/">Accueil</a> <a href="/sport">Sport</a></nav>'
        f"<article><h1>{title}</h1>{paragraphs}</article>"
        "<footer>© Le Courrier du Doubs, tous droits réservés</footer></body></html>"
    )


LOUE = article(
    "La Loue retrouve ses truites",
    "Les pêcheurs de la vallée de la Loue ont compté cette année 2 300 truites farios sur le "
    "tronçon entre Ornans et Quingey, contre 900 il y a cinq ans.\n"
    "La fédération de pêche attribue ce retour à la fin des rejets d'une ancienne fromagerie "
    "et aux arbres replantés le long des berges depuis 2019.",
)
LOUE_CHANGED = LOUE.replace("2 300 truites", "2 750 truites").replace("900 il y a", "800 il y a")
SAUT = article(
    "Le saut du Doubs gelé",
    "Le saut du Doubs, une chute d'eau de 27 mètres à Villers-le-Lac, a gelé en surface pour la "
    "première fois depuis l'hiver 2012 après trois nuits à moins quinze degrés.\n"
    "Les bateliers ont suspendu les croisières jusqu'au dégel annoncé pour la fin du mois.",
)
CITADELLE = article(
    "Fréquentation record à la citadelle",
    "La citadelle de Besançon a accueilli 312 000 visiteurs cette année, un record depuis son "
    "inscription au patrimoine mondial de l'Unesco en 2008.\n"
    "Le muséum et le zoo ont attiré les familles pendant les vacances d'été.",
)
# Encoded as Latin-1, declared only by its <meta> (no charset in the Content-Type).
MORTEAU = article(
    "La saucisse de Morteau fête son label",
    "La saucisse de Morteau, fumée au bois de résineux dans les tuyés du Haut-Doubs, a vu "
    "ses ventes progresser de 12 % depuis l'obtention de son indication géographique protégée.",
    charset="iso-8859-1",
)


def rss(items: list[tuple[str, str, str]]) -> str:
    """RSS 2.0: (title, link, RFC 822 date) per item."""
    entries = "".join(
        f"<item><title>{t}</title><link>{link}</link><pubDate>{d}</pubDate></item>"
        for t, link, d in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Le Courrier du Doubs</title><link>http://example.org/</link>{entries}"
        "</channel></rss>"
    )


def atom(items: list[tuple[str, str, str]]) -> str:
    """Atom 1.0: (title, link, ISO date) per entry."""
    entries = "".join(
        f'<entry><title>{t}</title><link href="{link}"/><id>{link}</id><updated>{d}</updated>'
        "</entry>"
        for t, link, d in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Besançon Actu</title><id>urn:x</id><updated>2026-11-30T08:00:00Z</updated>"
        f"{entries}</feed>"
    )


class Site:
    """The routes the local server answers, changeable by the tests; it logs every request."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.log: list[tuple[str, dict[str, str]]] = []

    def page(self, path: str, html: str, encoding: str = "utf-8", ctype: str = "text/html") -> None:
        body = html.encode(encoding)
        self.routes[path] = (200, {"Content-Type": ctype}, body)

    def feed(self, path: str, xml: str, ctype: str) -> None:
        etag = f'"{abs(hash(xml))}"'
        self.routes[path] = (200, {"Content-Type": ctype, "ETag": etag}, xml.encode())


class Handler(BaseHTTPRequestHandler):
    site: Site

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.site.log.append((self.path, dict(self.headers)))
        if self.path == "/stall.html":
            time.sleep(20)  # past RAG_FETCH_TIMEOUT=3: the fetch gives up first
            return
        if self.path == "/big.html":
            return self._big()
        if self.path in ("/loop-a", "/loop-b"):
            return self._redirect("/loop-b" if self.path == "/loop-a" else "/loop-a")
        route = self.path.split("?")[0]
        status, headers, body = self.site.routes.get(route, (404, {}, b"not found"))
        if "ETag" in headers and self.headers.get("If-None-Match") == headers["ETag"]:
            status, body = 304, b""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _big(self) -> None:
        """50 MB of page, announced by no Content-Length: only streaming finds it too large."""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        block = b"<p>" + b"Encore une ligne de remplissage. " * 2000 + b"</p>\n"
        try:
            for _ in range(BIG_MB * 1024 * 1024 // len(block)):
                self.wfile.write(block)
        except OSError:
            pass  # the client hung up at its size cap


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Site, str]]:
    site = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Handler,), {"site": site}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    site.page("/loue.html", LOUE)
    site.page("/saut.html", SAUT)
    site.page("/citadelle.html", CITADELLE)
    site.page("/morteau.html", MORTEAU, encoding="iso-8859-1")
    site.page("/prive/note.html", article("Note interne", "Une note que robots.txt protège."))
    site.routes["/robots.txt"] = (
        200,
        {"Content-Type": "text/plain"},
        b"User-agent: *\nDisallow: /admin/\n\nUser-agent: rag-news\nDisallow: /prive/\n",
    )
    site.routes["/image.png"] = (200, {"Content-Type": "image/png"}, b"\x89PNG....")
    day = formatdate(time.mktime((2026, 11, 28, 9, 0, 0, 0, 0, 0)), usegmt=True)
    site.feed(
        "/rss.xml",
        rss(
            [
                ("La Loue retrouve ses truites", f"{base}/loue.html?utm_source=rss", day),
                ("Le saut du Doubs gelé", f"{base}/saut.html", day),
                ("Saucisse de Morteau", f"{base}/morteau.html", day),
                ("Page disparue", f"{base}/disparue.html", day),
                ("Serveur muet", f"{base}/stall.html", day),
                ("Page géante", f"{base}/big.html", day),
                ("Redirections en boucle", f"{base}/loop-a", day),
                ("Une image", f"{base}/image.png", day),
                ("Réservé", f"{base}/prive/note.html", day),
            ]
        ),
        "application/rss+xml",
    )
    site.feed(
        "/atom.xml",
        atom([("Record à la citadelle", f"{base}/citadelle.html", "2026-11-30T08:00:00Z")]),
        "application/atom+xml",
    )
    site.routes["/broken.xml"] = (
        200,
        {"Content-Type": "application/rss+xml"},
        b"<?xml version='1.0'?><rss><channel><item><title>coup",
    )
    yield site, base
    server.shutdown()


def lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def ask_json(question: str, data: Path, *flags: str) -> dict:
    result = run_cli("ask", "--json", *flags, question, data_dir=data)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_loopback_is_refused_by_default(site: tuple[Site, str], tmp_path: Path) -> None:
    _, base = site
    result = run_cli("ingest", f"{base}/loue.html", data_dir=tmp_path / "data")
    assert result.returncode == 3, result
    (line,) = lines(result.stdout, "failed:")
    assert line.startswith(f"failed: {base}/loue.html: refused: 127.0.0.1 is a private")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def fed(site: tuple[Site, str], tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A data dir after one ``rag ingest`` of both feeds and a malformed one."""
    _, base = site
    data = tmp_path_factory.mktemp("news") / "data"
    result = run_cli(
        "ingest",
        f"{base}/rss.xml",
        f"{base}/atom.xml",
        f"{base}/broken.xml",
        data_dir=data,
        env=ALLOW,
    )
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr, result.stderr
    return data, result


def test_feed_items_are_indexed_and_each_fault_reported(fed, site: tuple[Site, str]) -> None:
    _, result = fed
    _, base = site
    assert sorted(lines(result.stdout, "added:")) == sorted(
        f"added: {base}/{name}"
        for name in ("loue.html?utm_source=rss", "saut.html", "morteau.html", "citadelle.html")
    )
    failed = dict(line.split(": ", 2)[1:] for line in lines(result.stdout, "failed:"))
    assert failed[f"{base}/disparue.html"] == "HTTP 404 Not Found"
    assert failed[f"{base}/stall.html"].startswith("timed out")
    assert failed[f"{base}/big.html"].startswith("too large (over 5 MB")
    assert failed[f"{base}/loop-a"] == "redirect loop"
    assert failed[f"{base}/image.png"].startswith("not a page or feed (content type image/png")
    assert failed[f"{base}/broken.xml"].startswith("malformed feed")
    assert failed[f"{base}/prive/note.html"] == "disallowed by the site's robots.txt"
    assert len(failed) == 7


def test_requests_name_the_product_and_follow_no_link_of_a_page(fed, site) -> None:
    server, _ = site
    assert all(h["User-Agent"].startswith("rag-news/") for _, h in server.log)
    asked = {path.split("?")[0] for path, _ in server.log}
    assert "/sport" not in asked and "/" not in asked  # the pages' own links
    assert "/prive/note.html" not in asked
    assert sum(1 for path, _ in server.log if path == "/robots.txt") == 1  # once per run


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("10.1.2.3", True),
        ("192.168.0.10", True),
        ("169.254.169.254", True),  # cloud metadata (link-local)
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # loopback written as IPv6
        ("fe80::1%eth0", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("93.184.215.14", False),
        ("2606:4700::6810:85e5", False),
    ],
)
def test_private_addresses_are_refused_unless_allowed(address: str, refused: bool) -> None:
    if refused:
        with pytest.raises(FetchError, match="RAG_FETCH_ALLOW_PRIVATE"):
            check_address(address, allow_private=False)
    else:
        check_address(address, allow_private=False)
    check_address(address, allow_private=True)


def test_the_address_connected_to_is_checked_too(site, monkeypatch) -> None:
    """A name checked while it resolved to a public address, then connected to loopback
    (DNS rebinding): the peer's address is refused before the body is read."""
    _, base = site
    monkeypatch.setattr("rag.ingest.web.check_url", lambda url, allow_private: None)
    with Fetcher(make_settings(Path("unused"))) as fetcher, pytest.raises(FetchError) as caught:
        fetcher.get(f"{base}/loue.html", ("text/html",))
    assert str(caught.value).startswith("refused: 127.0.0.1")


def test_only_http_urls_are_fetched() -> None:
    for url in ("file:///etc/passwd", "ftp://example.org/x", "gopher://x", "http:///nohost"):
        with pytest.raises(FetchError):
            check_url(url, allow_private=True)


def test_the_card_links_to_the_page_and_escapes_what_it_shows() -> None:
    cite = {
        "source": "/data/web/abc.html",
        "url": "https://example.org/a(1)?q=x y",
        "outlet": "Le *Courrier*",
        "date": "2026-11-28",
    }
    shown = citation_origin(cite)
    assert shown.endswith("(https://example.org/a%281%29?q=x%20y)")
    assert "\\*Courrier\\*" in shown and "2026" in shown
    assert citation_origin({**cite, "url": "javascript:alert(1)"}) == "abc\\.html"


def test_a_question_is_cited_with_the_article_url(fed, site: tuple[Site, str]) -> None:
    data, _ = fed
    _, base = site
    answer = ask_json("Combien de truites les pêcheurs ont-ils compté dans la Loue ?", data)
    assert not answer["abstained"], answer
    cite = answer["citations"][0]
    assert cite["url"] == f"{base}/loue.html"  # canonical: no utm_ parameters
    assert (cite["outlet"], cite["date"]) == ("Le Courrier du Doubs", "2026-11-28")
    assert "2 300 truites" in cite["quote"]
    assert cite["source"] == cite["url"]  # what users know of a web article: its page
    question = "Combien de truites les pêcheurs ont-ils compté dans la Loue ?"
    cite = ask_json(question, data, "--absolute")["citations"][0]  # the server's paths
    stored = Path(cite["extracted"]).read_text(encoding="utf-8")
    assert stored[cite["start"] : cite["end"]] == cite["quote"]
    assert "Accueil" not in stored and "droits réservés" not in stored


def test_atom_dates_and_a_latin1_page(fed, site: tuple[Site, str]) -> None:
    data, _ = fed
    _, base = site
    answer = ask_json("Combien de visiteurs la citadelle de Besançon a-t-elle accueillis ?", data)
    cite = answer["citations"][0]
    assert (cite["url"], cite["date"]) == (f"{base}/citadelle.html", "2026-11-30")
    answer = ask_json(
        "De combien les ventes de saucisse de Morteau ont-elles progressé ?", data, "--absolute"
    )
    cite = answer["citations"][0]
    assert cite["url"] == f"{base}/morteau.html"
    assert "fumée au bois de résineux dans les tuyés" in Path(cite["extracted"]).read_text()


def test_each_article_once_and_an_update_replaces_it(fed, site: tuple[Site, str]) -> None:
    data, _ = fed
    server, base = site
    feeds = [f"{base}/rss.xml", f"{base}/atom.xml"]
    again = run_cli("ingest", *feeds, data_dir=data, env=ALLOW)
    assert lines(again.stdout, "added:") == lines(again.stdout, "updated:") == [], again.stdout
    before = RagService(make_settings(data)).indexed_files()

    server.page("/loue.html", LOUE_CHANGED)
    changed = run_cli("ingest", *feeds, data_dir=data, env=ALLOW)
    assert lines(changed.stdout, "updated:") == [f"updated: {base}/loue.html?utm_source=rss"]
    service = RagService(make_settings(data))
    assert service.indexed_files().keys() == before.keys()
    texts = [c.text for c in service.store.all_chunks()]
    assert any("2 750 truites" in t for t in texts)
    assert not any("2 300 truites" in t for t in texts)  # the old chunks are gone
    answer = service.ask("Combien de truites les pêcheurs ont-ils compté dans la Loue ?")
    assert "2 750 truites" in answer.citations[0].quote


def test_a_feed_of_300_items(site: tuple[Site, str], tmp_path: Path) -> None:
    server, base = site
    for i in range(300):
        server.page(
            f"/breve/{i}.html",
            article(
                f"Brève {i}",
                f"Brève numéro {i} du jour : {i * 7} "
                "personnes ont assisté au conseil municipal de Pontarlier.",
            ),
        )
    items = [
        (f"Brève {i}", f"{base}/breve/{i}.html", "Mon, 30 Nov 2026 08:00:00 GMT")
        for i in range(300)
    ]
    server.feed("/breves.xml", rss(items), "application/rss+xml")
    settings = make_settings(tmp_path / "data", fetch_allow_private=True, feed_max_items=100)
    out: list[str] = []
    run = News(settings, RagService(settings), out.append).ingest_urls([f"{base}/breves.xml"])
    assert len(run.paths) == 100 and run.failed == 0
    assert len(lines("\n".join(out), "added:")) == 100
    skipped = lines("\n".join(out), "skipped:")
    assert len(skipped) == 200
    assert (
        skipped[0]
        == f"skipped: {base}/breve/100.html: over the 100 items read per feed (RAG_FEED_MAX_ITEMS)"
    )


def test_feed_commands_and_the_watcher_follows_registered_feeds(
    site: tuple[Site, str], tmp_path: Path
) -> None:
    server, base = site
    data = tmp_path / "data"
    added = run_cli("feed", "add", f"{base}/atom.xml", "--workspace", "doubs", data_dir=data)
    assert added.returncode == 0, added.stderr
    assert run_cli("feed", "add", "file:///etc/passwd", data_dir=data).returncode == 2
    listed = run_cli("feed", "list", data_dir=data)
    assert listed.stdout.startswith(f"{normalize(base + '/atom.xml')}\tdoubs\tnever checked")
    page = run_cli("ingest", f"{base}/saut.html", data_dir=data, env=ALLOW)
    assert page.returncode == 0 and page.stdout == f"added: {base}/saut.html\n", page

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.txt").write_text("Une note sans rapport avec les feeds.\n")
    watcher = Watcher(docs, data, **ALLOW, RAG_FEED_INTERVAL="1")
    deadline = time.monotonic() + 180
    try:
        added = f"added: {base}/citadelle.html"
        until(lambda: added in watcher.lines, 180, watcher.lines)
        # The next looks send the feed's ETag back and get a 304.
        until(
            lambda: any(p == "/atom.xml" and "If-None-Match" in h for p, h in server.log),
            deadline - time.monotonic(),
            watcher.lines,
        )
    finally:
        watcher.proc.send_signal(signal.SIGINT)
        _, err = watcher.proc.communicate(timeout=60)
    assert "Traceback" not in err
    service = RagService(make_settings(data))
    chunks = service.store.all_chunks()
    mine = [c.meta for c in chunks if c.meta.get("url") == f"{base}/citadelle.html"]
    assert mine and all(m["workspace"] == "doubs" and m["date_int"] == 20261130 for m in mine)
    assert run_cli("feed", "list", data_dir=data).stdout.rstrip().endswith("\tok")
    assert run_cli("feed", "remove", f"{base}/atom.xml", data_dir=data).returncode == 0
    assert run_cli("feed", "list", data_dir=data).stdout == ""
    assert run_cli("feed", "remove", f"{base}/atom.xml", data_dir=data).returncode == 2
