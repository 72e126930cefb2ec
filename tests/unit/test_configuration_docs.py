"""docs/configuration.md is what ``Settings`` says: generated from the fields' defaults and
descriptions, so a setting added, removed or re-described without regenerating the page fails
here (the hand-kept table once differed from the code in 15 of 28 rows)."""

from __future__ import annotations

from rag.config import Settings, markdown
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m rag.config --markdown > docs/configuration.md"


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    assert PAGE.read_text(encoding="utf-8") == markdown(), f"run `{REGENERATE}`"


def test_every_setting_has_a_row_and_a_description() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert f"`RAG_{name.upper()}`" in page or name.startswith("openai_"), name
