"""Workspaces through `rag serve` and the real `openai` client: the chat completion's
``model`` names the workspace, ``/v1/models`` lists the readable ones, and neither user can
retrieve, cite or open the other's documents by any endpoint, nor through a key limited to
another workspace; an admin reads both. Also `rag workspace` and `--workspace` on the CLI, and
the page's workspace picker in headless Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from rag.accounts.users import Accounts
from rag.api import document_id
from tests.browser import ask as ask_page
from tests.browser import browser_available, chromium_page, streamlit_app
from tests.conftest import run_cli
from tests.integration.test_workspaces import (
    LAGOON_QUESTION,
    PORT,
    PORT_QUESTION,
    make_world,
)
from tests.system.test_api import client, rag_serve
from tests.system.test_browser_signin import WAIT_MS, sign_in


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], dict[str, Path]]]:
    """The server, a key per user (``root@north``: the admin's key limited to north)."""
    settings, _, files = make_world(tmp_path_factory.mktemp("ws-api"))
    accounts = Accounts(settings)
    keys = {name: accounts.new_key(name) for name in ("ann", "bob", "root")}
    keys["root@north"] = accounts.new_key("root", "north")
    with rag_serve(settings.data_dir) as url:
        yield url, keys, files


def ask(url: str, key: str, question: str, workspace: str | None) -> httpx.Response:
    body = {"question": question, **({"workspace": workspace} if workspace else {})}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/ask", json=body, headers=headers, timeout=120)


def quotes(citations: list) -> str:
    return " ".join(c["quote"] for c in citations)


def test_models_are_the_readable_workspaces(served) -> None:
    url, keys, _ = served
    listed = {who: [m.id for m in client(url, key).models.list()] for who, key in keys.items()}
    assert listed == {
        "ann": ["documents", "north"],
        "bob": ["documents", "south"],
        "root": ["documents", "north", "south"],
        "root@north": ["north"],
    }
    assert client(url, keys["bob"]).models.retrieve("south").id == "south"
    refusals = []
    for model in ("south", "nowhere"):
        with pytest.raises(openai.NotFoundError) as refused:
            client(url, keys["ann"]).models.retrieve(model)
        refusals.append(refused.value.body["message"].replace(repr(model), "NAME"))
    assert refusals[0] == refusals[1]


def test_chat_completions_answer_from_the_named_workspace_only(served) -> None:
    url, keys, _ = served
    messages = [{"role": "user", "content": PORT_QUESTION}]
    for who in ("bob", "root"):
        done = client(url, keys[who]).chat.completions.create(model="south", messages=messages)
        assert "4321 navires" in quotes(done.choices[0].message.model_extra["citations"])
    for model in ("north", "documents"):
        ann = client(url, keys["ann"]).chat.completions.create(model=model, messages=messages)
        message = ann.choices[0].message
        assert "4321" not in message.content
        assert "4321" not in quotes(
            message.model_extra["citations"] + message.model_extra["closest"]
        )
        chunks = list(
            client(url, keys["ann"]).chat.completions.create(
                model=model, messages=messages, stream=True
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        last = chunks[-1].choices[0].delta.model_extra
        assert "4321" not in streamed + quotes(last["citations"] + last["closest"])
    for who, model in (("ann", "south"), ("ann", "nowhere"), ("root@north", "south")):
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError):
                client(url, keys[who]).chat.completions.create(
                    model=model, messages=messages, stream=stream
                )


def test_ask_takes_the_workspace_and_bm25_finds_nothing_outside_it(served) -> None:
    url, keys, _ = served
    found = ask(url, keys["bob"], "kwyjibotte", "south").json()
    assert "kwyjibotte" in quotes(found["citations"] + found["closest"])
    for who, workspace in (("ann", "north"), ("ann", None), ("root@north", "north")):
        answer = ask(url, keys[who], "kwyjibotte", workspace).json()
        assert "kwyjibotte" not in answer["answer"]
        assert "kwyjibotte" not in quotes(answer["citations"] + answer["closest"])
    assert "4321" in quotes(ask(url, keys["root"], PORT_QUESTION, "south").json()["citations"])
    unknown = ask(url, keys["ann"], PORT_QUESTION, "nowhere")
    forbidden = ask(url, keys["ann"], PORT_QUESTION, "south")
    limited = ask(url, keys["root@north"], PORT_QUESTION, "south")
    assert unknown.status_code == forbidden.status_code == limited.status_code == 404
    assert forbidden.json()["error"]["message"] == limited.json()["error"]["message"]


def test_documents_outside_the_caller_s_workspaces_are_missing(served) -> None:
    url, keys, files = served
    port = f"{url}/v1/documents/{document_id(str(files['port']))}"
    missing = f"{url}/v1/documents/{'0' * 32}"

    def get(link: str, who: str) -> httpx.Response:
        return httpx.get(link, headers={"Authorization": f"Bearer {keys[who]}"})

    assert get(port, "bob").json()["text"] == PORT
    assert get(port, "root").status_code == 200
    for who in ("ann", "root@north"):
        refused = get(port, who)
        assert refused.status_code == 404
        assert refused.json() == get(missing, who).json()


def test_uploads_go_to_a_workspace_its_editors_name(served) -> None:
    url, keys, _ = served
    files = {
        "files": ("digue.txt", "La digue du Sillon protège Saint-Malo.\n".encode(), "text/plain")
    }

    def upload(who: str, workspace: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {keys[who]}"}
        link = f"{url}/v1/documents?workspace={workspace}"
        return httpx.post(link, files=files, headers=headers, timeout=120)

    assert upload("ann", "south").status_code == 404
    assert upload("ann", "north").status_code == 403  # she reads north, edits nothing
    assert upload("bob", "south").json()["added"] == 1
    question = "Que protège la digue du Sillon ?"
    assert "Saint-Malo" in quotes(ask(url, keys["bob"], question, "south").json()["citations"])
    elsewhere = ask(url, keys["ann"], question, "north").json()
    assert "Saint-Malo" not in quotes(elsewhere["citations"] + elsewhere["closest"])


def test_the_cli_manages_workspaces_and_scopes_ingest_and_ask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "port.txt").write_text(PORT, encoding="utf-8")
    assert run_cli("workspace", "add", "south", data_dir=data).returncode == 0
    assert run_cli("ingest", str(docs), "--workspace", "south", data_dir=data).returncode == 0
    listed = run_cli("workspace", "list", data_dir=data).stdout
    assert listed.splitlines() == ["default\teveryone", "south\tadmins only"]
    inside = run_cli("ask", PORT_QUESTION, "--workspace", "south", "--json", data_dir=data)
    assert "4321 navires" in inside.stdout
    outside = run_cli("ask", PORT_QUESTION, "--json", data_dir=data)
    assert "4321" not in outside.stdout
    nowhere = run_cli("ask", PORT_QUESTION, "--workspace", "nowhere", data_dir=data)
    assert nowhere.returncode == 2 and nowhere.stderr == "error: No such workspace.\n"
    user = run_cli(
        "user",
        "add",
        "ann",
        "--role",
        "reader",
        "--password-stdin",
        data_dir=data,
        input="correct horse battery\n",
    )
    assert user.returncode == 0
    assert (
        run_cli("workspace", "grant", "south", "ann", "--role", "reader", data_dir=data).returncode
        == 0
    )
    assert "ann (reader)" in run_cli("workspace", "list", data_dir=data).stdout
    token = run_cli("user", "token", "ann", "--workspace", "south", data_dir=data)
    assert token.returncode == 0 and token.stdout.startswith("rag_")
    assert run_cli("workspace", "revoke", "south", "ann", data_dir=data).returncode == 0
    refused = run_cli("user", "token", "ann", "--workspace", "south", data_dir=data)
    assert refused.returncode == 2 and "No such workspace" in refused.stderr
    removed = run_cli("workspace", "remove", "south", data_dir=data)
    assert removed.returncode == 0 and "1 document" in removed.stderr
    assert run_cli("workspace", "remove", "default", data_dir=data).returncode == 2


@pytest.mark.browser
@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
def test_the_page_in_chromium_offers_and_answers_only_readable_workspaces(tmp_path) -> None:
    settings, _, _ = make_world(tmp_path)
    with streamlit_app(settings.data_dir) as url, chromium_page() as page:
        page.goto(url)
        sign_in(page, "ann")
        page.get_by_test_id("stSelectbox").click()
        assert page.get_by_role("option").all_inner_texts() == ["default", "north"]
        page.get_by_role("option", name="north").click()
        page.locator("text=Les flamants de la lagune >> visible=true").first.wait_for(
            timeout=WAIT_MS
        )
        ask_page(page, LAGOON_QUESTION)
        assert "Vaccarès" in page.locator("mark.cite-hl").first.inner_text()
        assert "4321" not in page.locator("body").inner_text()
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, "bob")
        page.get_by_test_id("stSelectbox").click()
        page.get_by_role("option", name="south").click()
        page.locator("text=Rapport sur le port de Brest >> visible=true").first.wait_for(
            timeout=WAIT_MS
        )
        ask_page(page, PORT_QUESTION)
        assert "4321 navires" in page.locator("mark.cite-hl").first.inner_text()
