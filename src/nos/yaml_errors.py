"""One wording for YAML syntax errors, so every file nos reads reports them alike on one line."""

from __future__ import annotations

import yaml


def where(e: yaml.YAMLError) -> str:
    """``" at line N: problem"`` (or ``": problem"`` without a position), to follow "not YAML"."""
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}" if mark is not None else ""
    return f"{at}: {getattr(e, 'problem', None) or e}"
