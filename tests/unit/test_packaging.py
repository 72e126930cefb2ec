"""The wheel's package list (pyproject.toml) names every folder of ``rag/``.

The list is explicit because the prompts are mapped into the package (``rag._prompts`` ->
``prompts/``) and a mapped folder is not found by package discovery; a folder left out of
the list would be missing from an installed copy while every test of the checkout passes.
"""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_package_folder_ships_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    listed = set(config["setuptools"]["packages"])
    inits = (ROOT / "rag").rglob("__init__.py")
    folders = {".".join(init.parent.relative_to(ROOT).parts) for init in inits}
    assert listed == folders | {"rag._prompts"}
    assert config["setuptools"]["package-dir"] == {"rag._prompts": "prompts"}
    assert config["setuptools"]["package-data"]["rag._prompts"] == ["*.txt"]
