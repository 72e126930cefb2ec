"""The chat page and sign-in under attack (issue 28): each test is one attack that used to work.

Real components throughout: SQLite and Argon2 for the sign-in bursts, ``streamlit run
app.py`` for the page, reached over raw HTTP, its websocket, and headless Chromium (which
maps a foreign host name to 127.0.0.1 itself, as DNS rebinding would).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest
from websockets.sync.client import connect as ws_connect

import rag.accounts.users as users
from rag.accounts.conversations import Conversations
from rag.accounts.db import connect
from rag.accounts.users import (
    ACCOUNT_FREE_FAILURES,
    ANY_CLIENT,
    FREE_FAILURES,
    MAX_HASHING,
    Accounts,
    LockedOut,
    SignInError,
)
from rag.config import get_settings
from rag.security import FORWARDED_CLIENT, client_key, foreign_request, networks
from tests.browser import CHROMIUM, CHROMIUM_ARGS, browser_available
from tests.conftest import ROOT, make_settings
from tests.procs import child_env, free_port, stop

PASSWORD = "correct horse battery"
BURST = 30
LOOPBACK = networks(["127.0.0.1", "::1"])
WAIT_MS = 120_000
needs_browser = pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))


# --- Sign-in bursts: real Argon2, real SQLite -------------------------------------------


class CountingVerify:
    """Wraps the real password check to count the checks made and the most at once."""

    def __init__(self) -> None:
        self.real = users._verify
        self.lock = threading.Lock()
        self.calls = self.running = self.most = 0

    def __call__(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.real(password_hash, password)
        finally:
            with self.lock:
                self.running -= 1


def burst(attempts: list[tuple[Accounts, str, str, str]]) -> list[object]:
    """Run the sign-ins all at once (a barrier releases them together); each one's outcome."""
    gate = threading.Barrier(len(attempts))
    outcomes: list[object] = [None] * len(attempts)

    def attempt(i: int, accounts: Accounts, name: str, password: str, client: str) -> None:
        gate.wait()
        try:
            outcomes[i] = accounts.sign_in(name, password, client)
        except Exception as exc:  # the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=attempt, args=(i, *a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def failures(accounts: Accounts, name: str, client: str) -> int:
    with connect(accounts.settings) as db:
        row = db.execute(
            'SELECT failures FROM sign_in_failures WHERE "user" = ? AND client = ?', (name, client)
        ).fetchone()
    return row["failures"] if row else 0


@pytest.fixture
def accounts(tmp_path: Path, database_url: str | None) -> Accounts:
    """One account, on SQLite and on PostgreSQL (whose lock is an advisory lock)."""
    accounts = Accounts(make_settings(tmp_path / "data", database_url=database_url))
    accounts.add("ann", PASSWORD, "reader")
    return accounts


def test_a_burst_after_the_threshold_gets_one_password_check(accounts, monkeypatch) -> None:
    """After 4 failures, 30 simultaneous guesses: one is checked, the rest are locked out."""
    for _ in range(FREE_FAILURES - 1):
        with pytest.raises(SignInError):
            accounts.sign_in("ann", "a wrong guess", "attacker")
    spy = CountingVerify()
    monkeypatch.setattr(users, "_verify", spy)
    outcomes = burst([(accounts, "ann", f"guess {i}", "attacker") for i in range(BURST)])
    assert all(isinstance(o, LockedOut) for o in outcomes), outcomes
    assert spy.calls == 1
    assert failures(accounts, "ann", "attacker") == FREE_FAILURES  # no count lost or doubled
    with pytest.raises(LockedOut):
        accounts.sign_in("ann", PASSWORD, "attacker")


def test_a_burst_from_many_addresses_is_counted_per_account_and_bounded(
    accounts, monkeypatch
) -> None:
    """30 addresses guess at once: each attempt counts for the account, the account locks
    after ``ACCOUNT_FREE_FAILURES``, and never more than ``MAX_HASHING`` checks run at once."""
    spy = CountingVerify()
    monkeypatch.setattr(users, "_verify", spy)
    outcomes = burst([(accounts, "ann", "a wrong guess", f"10.0.0.{i}") for i in range(BURST)])
    assert all(isinstance(o, SignInError | LockedOut) for o in outcomes), outcomes
    assert spy.calls == ACCOUNT_FREE_FAILURES
    assert 1 < spy.most <= MAX_HASHING
    assert failures(accounts, "ann", ANY_CLIENT) == ACCOUNT_FREE_FAILURES
    with pytest.raises(LockedOut):  # from a new address too, with the right password
        accounts.sign_in("ann", PASSWORD, "10.0.1.1")


def test_a_success_clears_the_counts(accounts) -> None:
    for _ in range(FREE_FAILURES - 1):
        with pytest.raises(SignInError):
            accounts.sign_in("ann", "a wrong guess", "office")
    assert accounts.sign_in("ann", PASSWORD, "office").name == "ann"
    assert failures(accounts, "ann", "office") == failures(accounts, "ann", ANY_CLIENT) == 0


# --- A removed account's name ------------------------------------------------------------


def test_a_recreated_name_does_not_inherit_conversations(accounts) -> None:
    old = Conversations(accounts.settings, "ann")
    conv = old.create("Combien de navires à Brest ?")
    old.append(conv.id, [{"role": "user", "content": "Combien de navires à Brest ?"}])
    accounts.remove("ann")
    accounts.add("ann", PASSWORD, "admin")
    assert Conversations(accounts.settings, "ann").list() == []
    with connect(accounts.settings) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_a_recreated_name_does_not_sign_in_the_old_session(tmp_path, monkeypatch) -> None:
    """A page signed in as a removed account stays signed out when the name is reused."""
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()
    accounts = Accounts(get_settings())
    accounts.add("ann", PASSWORD, "reader")
    accounts.add("keeper", PASSWORD, "admin")  # sign-in stays on meanwhile
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=300).run()
    at.text_input[0].input("ann")
    at.text_input[1].input(PASSWORD)
    next(b for b in at.button if b.label == "Sign in").click().run()
    assert at.chat_input and not at.exception
    accounts.remove("ann")
    accounts.add("ann", "another password", "admin")
    at.run()
    assert not at.chat_input and [t.label for t in at.text_input] == ["User name", "Password"]
    get_settings.cache_clear()
    st.cache_resource.clear()


# --- Host, Origin and forwarded addresses, as rules ---------------------------------------


def test_foreign_host_and_origin_rules() -> None:
    allowed = {"rag.example.org"}
    assert not foreign_request("127.0.0.1:8501", "http://127.0.0.1:8501", allowed)
    assert not foreign_request("localhost:8501", None, allowed)
    assert not foreign_request("[::1]:8501", "http://[::1]:8501", allowed)
    assert not foreign_request("RAG.example.org.", "https://rag.example.org", allowed)
    assert foreign_request("evil.test:8501", "http://evil.test:8501", allowed)
    assert foreign_request("127.0.0.1:8501", "http://evil.test", allowed)
    assert foreign_request("127.0.0.1:8501", "null", allowed)
    assert foreign_request("", None, allowed)
    assert foreign_request("[::1", None, allowed)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    none: list = []
    # Without trusted proxies, a header value is never the client (uvicorn may already have
    # applied it for a loopback peer): every such request is one client.
    for spoof in ("203.0.113.7", "198.51.100.1", "10.0.0.9, 203.0.113.7"):
        assert client_key(spoof, spoof, none, LOOPBACK) == FORWARDED_CLIENT
    assert client_key("192.0.2.10", "203.0.113.7", none, LOOPBACK) == FORWARDED_CLIENT
    assert client_key("192.0.2.10", None, none, LOOPBACK) == "192.0.2.10"
    # A proxy on loopback, trusted: the right-most hop it did not add is the client.
    proxy = networks(["127.0.0.1"])
    assert client_key("198.51.100.4", "203.0.113.7, 198.51.100.4", proxy, proxy) == ("198.51.100.4")
    # A remote proxy, trusted; a direct client sending the header is not believed.
    remote = networks(["192.0.2.0/24"])
    assert client_key("192.0.2.1", "203.0.113.7", remote, none) == "203.0.113.7"
    assert client_key("198.51.100.9", "203.0.113.7", remote, none) == FORWARDED_CLIENT
    assert client_key("192.0.2.1", "not-an-address", remote, none) == FORWARDED_CLIENT
    with pytest.raises(ValueError, match="neither an address nor a network"):
        networks(["proxy.example.org"])


# --- The served page ---------------------------------------------------------------------


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def websocket_status(url: str, host: str, origin: str | None) -> int:
    """The status of a websocket handshake to the page (101: the page is talking)."""
    port = int(url.rsplit(":", 1)[1])
    lines = [
        "GET /_stcore/stream HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: streamlit",
    ] + ([f"Origin: {origin}"] if origin else [])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(4096).split(b" ")[1])


@contextlib.contextmanager
def page_server(data_dir: Path, *args: str, **env: str) -> Iterator[str]:
    """``streamlit run app.py`` as ``./dev app`` runs it, plus ``args``; its loopback URL."""
    port = free_port()
    environ = child_env(data_dir, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    proc = subprocess.Popen(
        [*command, "--server.port", str(port), *args],
        cwd=ROOT,
        env={**environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while http_or_none(url + "/_stcore/health") is None:
            assert time.monotonic() < deadline and proc.poll() is None, "the page did not start"
            time.sleep(0.3)
        yield url
    finally:
        stop(proc)


def http_or_none(url: str) -> int | None:
    """The status the server answers with (a refusal too), or None while it is not up."""
    try:
        return http(url)[0]
    except OSError:
        return None


@contextlib.contextmanager
def chromium(*extra_args: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def open_page(tmp_path_factory) -> Iterator[str]:
    """The page with sign-in off, on loopback (the default set-up)."""
    with page_server(tmp_path_factory.mktemp("open-page") / "data") as url:
        yield url


@pytest.fixture(scope="module")
def signin_page(tmp_path_factory) -> Iterator[str]:
    """The page with sign-in on, on loopback."""
    data_dir = tmp_path_factory.mktemp("signin-page") / "data"
    Accounts(make_settings(data_dir)).add("ann", PASSWORD, "editor")
    with page_server(data_dir) as url:
        yield url


def test_a_foreign_host_or_origin_is_refused_before_the_page_talks(open_page: str) -> None:
    port = open_page.rsplit(":", 1)[1]
    status, body, _ = http(open_page + "/", {"Host": f"evil.test:{port}"})
    assert status == 403 and "RAG_ALLOWED_HOSTS" in body
    assert websocket_status(open_page, f"evil.test:{port}", f"http://evil.test:{port}") == 403
    assert websocket_status(open_page, f"127.0.0.1:{port}", "null") == 403
    assert websocket_status(open_page, f"127.0.0.1:{port}", "http://evil.test") == 403
    assert websocket_status(open_page, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
    assert websocket_status(open_page, f"localhost:{port}", None) == 101


@pytest.mark.browser
@needs_browser
def test_dns_rebinding_in_chromium_gets_no_chat(open_page: str) -> None:
    """A page loaded as http://evil.test whose name resolves to 127.0.0.1 gets the refusal;
    the same page at its own address gets the chat box."""
    port = open_page.rsplit(":", 1)[1]
    with chromium("--host-resolver-rules=MAP evil.test 127.0.0.1") as browser:
        page = browser.new_page()
        page.goto(f"http://evil.test:{port}/")
        assert "answers only to its own address" in page.locator("body").inner_text()
        assert page.get_by_test_id("stChatInputTextArea").count() == 0
        page.goto(open_page)
        page.get_by_test_id("stChatInputTextArea").wait_for(timeout=WAIT_MS)


@pytest.mark.browser
@needs_browser
def test_a_new_forwarded_for_per_guess_is_still_locked_out(signin_page: str) -> None:
    """Each guess from a fresh browser context with its own X-Forwarded-For: the fifth is
    locked out, as from one client; the real user's own browser still signs in."""
    with chromium() as browser:
        for i in range(1, FREE_FAILURES + 1):
            context = browser.new_context(extra_http_headers={"X-Forwarded-For": f"203.0.113.{i}"})
            page = context.new_page()
            page.goto(signin_page)
            page.get_by_role("textbox", name="User name").wait_for(timeout=WAIT_MS)
            page.get_by_role("textbox", name="User name").fill("ann")
            page.get_by_role("textbox", name="Password").fill(f"guess number {i}")
            page.get_by_role("button", name="Sign in").click()
            error = page.get_by_test_id("stAlertContentError")
            error.wait_for(timeout=WAIT_MS)
            expected = "Too many failed sign-ins" if i == FREE_FAILURES else "Wrong user name"
            assert expected in error.inner_text()
            context.close()
        page = browser.new_page()  # no header: not the "forwarded" client that was locked
        page.goto(signin_page)
        page.get_by_role("textbox", name="User name").wait_for(timeout=WAIT_MS)
        page.get_by_role("textbox", name="User name").fill("ann")
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("stChatInputTextArea").wait_for(timeout=WAIT_MS)


def upload_after_first_run(url: str) -> tuple[int, str]:
    """Open a session as the browser does (the XSRF cookie, the websocket, a first run of the
    page), then upload a file for it as the upload widget would; the upload's answer."""
    _, _, headers = http(url + "/_stcore/health")  # sets the XSRF cookie
    cookie = {k.lower(): v for k, v in headers.items()}["set-cookie"].split(";", 1)[0]
    ws_url = url.replace("http", "ws", 1) + "/_stcore/stream"
    with ws_connect(
        ws_url, subprotocols=["streamlit"], additional_headers={"Cookie": cookie}
    ) as ws:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        ws.send(rerun.SerializeToString())
        session, finished = "", False
        while not finished:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=WAIT_MS / 1000))
            if msg.WhichOneof("type") == "new_session":
                session = msg.new_session.initialize.session_id
            finished = msg.WhichOneof("type") == "script_finished"
        return upload(url, session, cookie, cookie.split("=", 1)[1])


def test_no_upload_is_taken_before_sign_in(signin_page: str, open_page: str) -> None:
    """A signed-out session cannot upload a file, though Streamlit would hold it in memory;
    a session shown the upload widget (sign-in off) can."""
    status, body = upload_after_first_run(signin_page)
    assert status == 403 and "Sign in" in body
    assert upload_after_first_run(open_page)[0] in (200, 204)


def upload(url: str, session: str, cookie: str, token: str) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n{'x' * 1000}\r\n--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(
        f"{url}/_stcore/upload_file/{session}/{uuid.uuid4().hex}",
        data=body,
        method="PUT",
        headers={
            "Cookie": cookie,
            "X-Xsrftoken": token,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_page_is_refused_beyond_loopback_without_an_account(tmp_path: Path) -> None:
    """Served on every address with no account: refused with the reason, websocket too;
    served once an account exists (checked on each request)."""
    data_dir = tmp_path / "data"
    with page_server(data_dir, "--server.address", "0.0.0.0") as url:
        port = url.rsplit(":", 1)[1]
        status, body, _ = http(url + "/")
        assert status == 403 and "with no account" in body and "rag user add" in body
        assert websocket_status(url, f"127.0.0.1:{port}", None) == 403
        Accounts(make_settings(data_dir)).add("ann", PASSWORD, "admin")
        assert http(url + "/")[0] == 200
        assert websocket_status(url, f"127.0.0.1:{port}", None) == 101


def test_the_open_page_setting_serves_it_beyond_loopback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with page_server(data_dir, "--server.address", "0.0.0.0", RAG_ALLOW_OPEN_PAGE="true") as url:
        assert http(url + "/")[0] == 200
        assert websocket_status(url, f"127.0.0.1:{url.rsplit(':', 1)[1]}", None) == 101
