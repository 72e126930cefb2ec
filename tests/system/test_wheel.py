"""The installed product, not the checkout: a wheel built from the source, installed in a fresh
venv with no source tree beside it, answers through an LLM (the stand-in server) with the
prompts it carries (rag/_prompts, mapped from the top-level prompts/ in pyproject.toml).

The fresh venv (made without pip, driven by the project's pip through ``--python``) borrows the
project venv's dependencies through a path file instead of downloading them (nothing downloads
in tests); the wheel itself is installed with --no-deps, then ``pip check`` must be clean.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SEED
from tests.integration.test_llm import (
    KURSK,
    KURSK_CLAIM,
    KURSK_SENTENCE,
    MODEL,
    SECRET,
    citing,
    llm_env,
)
from tests.openai_standin import StandIn, reply
from tests.procs import child_env

SOURCES = ("pyproject.toml", "README.md", "rag", "prompts")
CACHES = shutil.ignore_patterns("__pycache__")


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv holding only the wheel built from the source."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(ROOT / name, source / name)
    pip = (sys.executable, "-m", "pip")
    _run(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        work / "dist",
        source,
        cwd=work,
    )
    shutil.rmtree(source)  # nothing of the checkout is left to import from
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=work)
    borrowed = "\n".join(site.getsitepackages())
    Path(purelib.strip(), "project-deps.pth").write_text(borrowed + "\n", encoding="utf-8")
    wheel = next((work / "dist").glob("rag-*.whl"))
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=work)
    return venv / "bin"


def _env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return child_env(data_dir, **(extra or {}))


def test_the_installed_wheel_answers_through_an_llm(installed: Path, tmp_path: Path) -> None:
    python = installed / "python"
    where = _run(python, "-c", "import rag; print(rag.__file__)", cwd=tmp_path)
    assert str(installed.parent) in where and str(ROOT) not in where
    _run(sys.executable, "-m", "pip", "--python", python, "check", cwd=tmp_path)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SEED, corpus / SEED.name)
    data = tmp_path / "data"
    _run(installed / "rag", "ingest", corpus, cwd=tmp_path, env=_env(data))
    server = StandIn()
    try:
        server.script(reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)))
        out = _run(
            installed / "rag",
            "ask",
            KURSK,
            "--json",
            cwd=tmp_path,
            env=_env(data, llm_env(server.url)),
        )
        system = server.requests[0]["messages"][0]["content"]
    finally:
        server.close()
    payload = json.loads(out)
    assert payload["mode"] == f"llm:{MODEL}" and payload["answer"] == f"{KURSK_CLAIM} [1]."
    assert payload["citations"] and all(c["verified"] for c in payload["citations"])
    assert SECRET not in out
    assert system == (ROOT / "prompts" / "system.txt").read_text(encoding="utf-8")
