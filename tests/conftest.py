"""Shared fixtures: real embedder, real embedded Chroma, in temporary data dirs.

Everything the tests read is inside the repository (the PIAF subset is tests/data/piaf/).
This file is loaded for every test folder, tests/unit/ included, so it imports nothing heavy
at module level: the service (LlamaIndex, Chroma) is imported by the fixtures that build one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rag.config import Settings
from tests.procs import child_env

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rag.service import RagService
    from tests.fakes import FakeEmbedder
    from tests.openai_standin import StandIn
    from tests.pg import Cluster

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "000_a39d74119d63f477.txt"
# The first 160 PIAF passages and the questions on them (MIT / CC BY-SA: see its README.md).
PIAF = ROOT / "tests" / "data" / "piaf"


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings isolated from the developer's environment (own data dir, its SQLite app
    database, no LLM unless given)."""
    isolated = {
        "llm_model": None,
        "openai_api_key": None,
        "openai_base_url": None,
        "database_url": None,
    }
    return Settings(data_dir=data_dir, **{**isolated, **overrides})


@pytest.fixture(scope="session")
def seed_service(tmp_path_factory) -> RagService:
    """A service with the seed corpus ingested once for the whole session."""
    from rag.service import RagService

    corpus = tmp_path_factory.mktemp("seed-corpus")
    shutil.copy(SEED, corpus / SEED.name)
    service = RagService(make_settings(tmp_path_factory.mktemp("seed-data")))
    service.ingest([corpus], show_progress=False)
    return service


@pytest.fixture
def service(tmp_path) -> RagService:
    from rag.service import RagService

    return RagService(make_settings(tmp_path / "data"))


def run_cli(
    *args: str,
    data_dir: Path,
    cwd: Path = ROOT,
    timeout: float = 600,
    env: dict | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``rag`` as a user would, with an isolated data dir."""
    full_env = child_env(data_dir, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def piaf_passages(n: int) -> list[dict]:
    with (PIAF / "passages.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def write_piaf_corpus(folder: Path, n: int) -> Path:
    """The first ``n`` PIAF passages as text files (title line, then the paragraph)."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in piaf_passages(n):
        (folder / f"{row['passage_id']}.txt").write_text(
            f"{row['title']}\n{row['text']}\n", encoding="utf-8"
        )
    return folder


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    """Predictable vectors in milliseconds (see tests/fakes.py)."""
    from tests.fakes import FakeEmbedder

    return FakeEmbedder()


def cited(service: RagService, question: str, needle: str):
    """The first citation of an answer to ``question`` whose quote contains ``needle``."""
    answer = service.ask(question)
    assert not answer.abstained, answer
    cites = [c for c in answer.citations if needle in c.quote]
    assert cites, answer
    return cites[0]


@pytest.fixture(scope="module")
def seed_corpus(tmp_path_factory) -> Path:
    """A folder holding only the seed article, shared by a module's tests."""
    corpus = tmp_path_factory.mktemp("seed-corpus")
    shutil.copy(SEED, corpus / SEED.name)
    return corpus


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the session (tests/pg.py), or a skip saying why."""
    from tests.pg import Cluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb/postgres on PATH or under "
            "/usr/lib/postgresql/*/bin): install Debian's postgresql package"
        )
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# The app database backends the database-touching suites run against: `None` is the SQLite
# file in the data dir, "postgresql" a fresh database of the session's cluster.
DATABASES = ["sqlite", "postgresql"]


def _database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each test run once on SQLite and once on its own empty PostgreSQL database."""
    return _database_url(request)


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(request: pytest.FixtureRequest) -> str | None:
    """As ``database_url``, one database for a module's tests (servers started once)."""
    return _database_url(request)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    """The LLM stand-in server (tests/openai_standin.py), one per test module."""
    from tests.openai_standin import StandIn

    server = StandIn()
    yield server
    server.close()
