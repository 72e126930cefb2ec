"""Workspaces: two users in two workspaces, on real Chroma, the real embedder, the real
account database and the real page through AppTest. Neither user retrieves, sees, cites or
opens the other's documents through any path; an admin sees both."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from rag.accounts import db as app_db
from rag.accounts.conversations import MISSING_CONVERSATION, ConversationError, Conversations
from rag.accounts.db import DB_NAME, migrations
from rag.accounts.users import AccountError, Accounts
from rag.accounts.workspaces import NoSuchWorkspace, Workspaces
from rag.config import DEFAULT_WORKSPACE, Settings, get_settings
from rag.retrieval.filters import FilterError, Filters
from rag.retrieval.scope import Scope
from rag.service import RagService
from tests.conftest import ROOT, make_settings, write_piaf_corpus
from tests.integration.test_llm import llm_settings
from tests.openai_standin import StandIn, reply

TIMEOUT = 300
PASSWORD = "correct horse battery"
LAGOON = (
    "Les flamants de la lagune\n"
    "Le flamant rose niche dans la lagune du Vaccarès, en Camargue.\n"
    "La zorglubine est une algue rouge que seuls ces flamants mangent.\n"
)
PORT = (
    "Rapport sur le port de Brest\n"
    "Le port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
    "La kwyjibotte est la barque à fond plat des pêcheurs de Recouvrance.\n"
)
PORT_QUESTION = "Combien de navires de pêche le port de Brest a-t-il accueillis ?"
LAGOON_QUESTION = "Où niche le flamant rose ?"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def make_world(root: Path) -> tuple[Settings, RagService, dict[str, Path]]:
    """Workspace ``north`` (the lagoon and 20 PIAF passages) read by ann, ``south`` (the
    port) edited by bob, an admin (root), and the seed article in the default workspace."""
    settings = make_settings(root / "data")
    accounts, workspaces = Accounts(settings), Workspaces(settings)
    for name, role in (("ann", "reader"), ("bob", "reader"), ("root", "admin")):
        accounts.add(name, PASSWORD, role)
    workspaces.add("north")
    workspaces.add("south")
    workspaces.grant("north", "ann", "reader")
    workspaces.grant("south", "bob", "editor")
    service = RagService(settings)
    north = write(write_piaf_corpus(root / "north", 20), "lagune.txt", LAGOON)
    south = write(root / "south", "port.txt", PORT)
    service.ingest([north], show_progress=False, workspace="north")
    service.ingest([south], show_progress=False, workspace="south")
    service.ingest([ROOT / "seeds"], show_progress=False)
    return settings, service, {"lagoon": north / "lagune.txt", "port": south / "port.txt"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Settings, RagService, dict[str, Path]]:
    return make_world(tmp_path_factory.mktemp("workspaces"))


def sources(answer) -> set[str]:
    return {c.source for c in [*answer.citations, *answer.closest]}


def test_each_arm_retrieves_only_inside_its_scope(world) -> None:
    _, service, files = world
    north, south = service.scope(["north"]), service.scope(["south"])
    retriever = service.retriever(5, north)
    # BM25 alone, on a word only the other workspace has: masked before its top k.
    assert retriever.lexical_search("kwyjibotte").ids == []
    assert service.retriever(5, south).lexical_search("kwyjibotte").ids
    assert service.retriever(5).lexical_search("kwyjibotte").ids  # unscoped: it is indexed
    qvec = retriever.embed(PORT_QUESTION)
    ranked = list({*retriever.chunk_ranking(qvec).ids, *retriever.sentence_ranking(qvec).ids})
    assert ranked
    assert {c.meta["workspace"] for c in service.store.chunks_by_id(ranked)} == {"north"}
    # Filtered inside the arms: k passages still come back, all from the workspace.
    found = retriever.search("kwyjibotte Brest navires de pêche", k=5)
    assert len(found.nodes) == 5
    assert str(files["port"]) not in {n.node.metadata["source"] for n in found.nodes}


def test_answers_cite_only_their_workspace(world) -> None:
    _, service, files = world
    port, lagoon = str(files["port"]), str(files["lagoon"])
    assert port in sources(service.ask(PORT_QUESTION, scope=service.scope(["south"])))
    for question in (PORT_QUESTION, "kwyjibotte"):
        for readable in (["north"], [DEFAULT_WORKSPACE], ["north", DEFAULT_WORKSPACE]):
            answer = service.ask(question, scope=service.scope(readable))
            assert port not in sources(answer) and "4321" not in answer.text
    assert lagoon in sources(service.ask(LAGOON_QUESTION, scope=service.scope(["north"])))
    assert lagoon not in sources(service.ask(LAGOON_QUESTION, scope=service.scope(["south"])))
    # An admin's scope reads both.
    both = service.scope(["north", "south"])
    assert port in sources(service.ask(PORT_QUESTION, scope=both))


def test_a_filter_naming_another_workspace_s_document_names_nothing(world) -> None:
    """A filter is resolved inside the caller's workspaces: naming a document of another one
    gets the error an unknown document gets, so it does not tell the document exists."""
    _, service, files = world
    port = str(files["port"])
    with pytest.raises(FilterError) as other:
        service.ask(PORT_QUESTION, filters=Filters.of([port]), scope=service.scope(["north"]))
    with pytest.raises(FilterError) as unknown:
        service.ask(
            PORT_QUESTION, filters=Filters.of(["absent.txt"]), scope=service.scope(["north"])
        )
    assert str(other.value).replace(repr(port), "X") == str(unknown.value).replace(
        "'absent.txt'", "X"
    )
    answer = service.ask(PORT_QUESTION, filters=Filters.of([port]), scope=service.scope(["south"]))
    assert sources(answer) == {port}


def test_the_llm_reads_only_the_workspace_s_passages(world, standin: StandIn) -> None:
    """With top-k past the corpus's size, an unscoped context holds every chunk: the port's
    too; a scoped one none of another workspace's."""
    settings, _, _ = world
    service = RagService(llm_settings(settings.data_dir, standin.url))

    def context(scope: Scope | None) -> str:
        standin.script(reply("Je ne sais pas."))
        service.ask(LAGOON_QUESTION, top_k=50, scope=scope)
        assert standin.requests
        return json.dumps(standin.requests, ensure_ascii=False)

    assert "4321 navires" in context(None)
    north = context(service.scope(["north"]))
    assert "Vaccarès" in north and "4321" not in north and "kwyjibotte" not in north


def test_documents_are_listed_and_opened_only_in_scope(world) -> None:
    _, service, files = world
    port, lagoon = str(files["port"]), str(files["lagoon"])
    north = service.scope(["north"])
    assert lagoon in service.document_refs(north) and port not in service.document_refs(north)
    assert service.document_text(port, north) is None
    assert service.document_text(port, service.scope(["south"])) == PORT
    assert set(service.indexed_files(service.scope(["south"]))) == {port}
    assert service.status(service.scope(["south"])).documents == 1
    default = service.indexed_files(service.scope([DEFAULT_WORKSPACE]))
    assert [Path(s).parent.name for s in default] == ["seeds"]


def test_access_rules(world) -> None:
    settings, _, _ = world
    accounts, workspaces = Accounts(settings), Workspaces(settings)
    ann, bob, root = (accounts.get(n) for n in ("ann", "bob", "root"))
    assert workspaces.readable(ann) == [DEFAULT_WORKSPACE, "north"]
    assert workspaces.readable(bob) == [DEFAULT_WORKSPACE, "south"]
    assert workspaces.readable(root) == [DEFAULT_WORKSPACE, "north", "south"]
    assert workspaces.readable(None) == [DEFAULT_WORKSPACE, "north", "south"]  # sign-in off
    assert workspaces.role_in(bob, "south") == "editor"
    assert workspaces.role_in(ann, "north") == "reader"
    # Unknown and forbidden: one error, one message.
    with pytest.raises(NoSuchWorkspace) as unknown:
        workspaces.check(ann, "nowhere")
    with pytest.raises(NoSuchWorkspace) as forbidden:
        workspaces.check(ann, "south")
    assert str(unknown.value) == str(forbidden.value)
    with pytest.raises(AccountError, match="needs editor"):
        workspaces.check(ann, "north", "editor")
    # A key limited to one workspace reads that one only.
    key = accounts.new_key("root", "north")
    assert workspaces.key_limit(key) == "north"
    assert workspaces.readable(root, workspaces.key_limit(key)) == ["north"]
    with pytest.raises(NoSuchWorkspace):
        workspaces.check(root, "south", key_limit="north")
    for refused in (
        lambda: workspaces.add(DEFAULT_WORKSPACE),
        lambda: workspaces.add("north"),
        lambda: workspaces.grant(DEFAULT_WORKSPACE, "ann", "reader"),
        lambda: workspaces.grant("north", "nobody", "reader"),
        lambda: workspaces.grant("north", "ann", "admin"),
    ):
        with pytest.raises(AccountError):
            refused()


def test_removing_a_workspace_removes_its_documents_keys_and_conversations(tmp_path) -> None:
    settings = make_settings(tmp_path / "data")
    accounts, workspaces = Accounts(settings), Workspaces(settings)
    accounts.add("cat", PASSWORD, "reader")
    workspaces.add("gone")
    workspaces.grant("gone", "cat", "editor")
    key = accounts.new_key("cat", "gone")
    conv = Conversations(settings, "cat", "gone").create("Où ?")
    service = RagService(settings)
    docs = write(tmp_path / "docs", "port.txt", PORT)
    service.ingest([docs], show_progress=False, workspace="gone")
    assert service.forget_workspace("gone") == 1
    workspaces.remove("gone")
    assert service.indexed_files() == {} and service.retriever(5).lexical_search("Brest").ids == []
    assert accounts.user_for_key(key) is None
    assert workspaces.readable(accounts.get("cat")) == [DEFAULT_WORKSPACE]
    assert Conversations(settings, "cat", "gone").list() == []
    with pytest.raises(ConversationError):
        Conversations(settings, "cat").get(conv.id)


def test_a_database_from_before_workspaces_gets_the_column(tmp_path: Path) -> None:
    """A database at schema version 2 (before workspaces) gets migration 3 on first use:
    its conversations are in the default workspace."""
    settings = make_settings(tmp_path / "data")
    Accounts(settings).enabled()  # creates and marks the data dir
    (settings.data_dir / DB_NAME).unlink()
    with sqlite3.connect(settings.data_dir / DB_NAME) as db:
        for version, name, sql in migrations()[:2]:
            db.executescript(sql)
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"
            )
            db.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))
        db.execute("INSERT INTO conversations VALUES ('old', '', 'Kursk?', 1.0, 1.0)")
    app_db._migrated.clear()
    store = Conversations(settings)
    assert [c.id for c in store.list()] == ["old"]
    assert store.workspace_of("old") == DEFAULT_WORKSPACE


# The page, through AppTest, signed in as each user in turn.


@pytest.fixture
def on_page(world, monkeypatch: pytest.MonkeyPatch):
    settings, _, _ = world
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()
    yield settings
    get_settings.cache_clear()
    st.cache_resource.clear()


def signed_in_page(settings: Settings, name: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT)
    at.session_state["user_name"] = name
    at.session_state["user_created"] = Accounts(settings).get(name).created
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = [h.proto.body for h in at.html] + [m.value for m in at.markdown]
    return "\n".join(parts + [c.value for c in at.caption])


def test_the_page_shows_each_user_only_their_workspaces(on_page: Settings) -> None:
    ann = signed_in_page(on_page, "ann")
    picker = ann.sidebar.selectbox(key="workspace")
    assert picker.options == [DEFAULT_WORKSPACE, "north"]
    picker.set_value("north").run()
    assert "Les flamants de la lagune" in page_text(ann)  # the welcome lists north's titles
    assert "Rapport sur le port de Brest" not in page_text(ann)
    for question in (PORT_QUESTION, "kwyjibotte"):
        ann.chat_input[0].set_value(question).run()
        assert not ann.exception, ann.exception
        assert "4321 navires" not in page_text(ann) and "kwyjibotte" not in "".join(
            h.proto.body for h in ann.html
        )
    ann.chat_input[0].set_value(LAGOON_QUESTION).run()
    assert "Vaccarès" in page_text(ann)
    saved = Conversations(on_page, "ann", "north").list()
    assert saved and Conversations(on_page, "ann").list() == []  # held in north
    root = signed_in_page(on_page, "root")
    assert root.sidebar.selectbox(key="workspace").options == [DEFAULT_WORKSPACE, "north", "south"]
    root.sidebar.selectbox(key="workspace").set_value("south").run()
    root.chat_input[0].set_value(PORT_QUESTION).run()
    assert "4321 navires" in page_text(root)


def test_a_conversation_link_into_another_workspace_is_refused(on_page: Settings) -> None:
    # ann's own conversation, held in a workspace she may not read (say, revoked since).
    held = Conversations(on_page, "ann", "south").create(PORT_QUESTION)
    answer = {"role": "assistant", "content": "4321 navires [1].", "citations": []}
    Conversations(on_page, "ann", "south").append(held.id, [answer])
    linked = signed_in_page(on_page, "ann", {"c": held.id})
    missing = signed_in_page(on_page, "ann", {"c": "0" * 32})
    assert not linked.chat_message and "4321" not in page_text(linked)
    assert [w.value for w in linked.warning] == [w.value for w in missing.warning]
    assert [w.value for w in linked.warning] == [MISSING_CONVERSATION]
    # Once she may read south, the same link opens it there, and the picker follows.
    Workspaces(on_page).grant("south", "ann", "reader")
    try:
        opened = signed_in_page(on_page, "ann", {"c": held.id})
        assert [m.name for m in opened.chat_message] == ["assistant"]
        assert opened.sidebar.selectbox(key="workspace").value == "south"
    finally:
        Workspaces(on_page).revoke("south", "ann")
