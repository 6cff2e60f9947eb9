"""The README documents every setting the service reads."""

from __future__ import annotations

from service.settings import Settings
from tests.helpers import ROOT


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CNN_{name.upper()}`" not in readme]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:800]
    assert "make serve" in head
    assert "make test" in head
