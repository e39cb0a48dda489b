"""Docs that are generated from code stay equal to what the code prints."""

from __future__ import annotations

from pathlib import Path

from nos.cli.models import render_models
from nos.mig.catalog import default_catalog

ROOT = Path(__file__).resolve().parent.parent


def test_mig_models_page_matches_the_catalog() -> None:
    page = (ROOT / "docs" / "mig-models.md").read_text()
    assert render_models(default_catalog()) in page, "regenerate: see the top of docs/mig-models.md"
