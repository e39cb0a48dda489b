"""The chart's default knownMigGeometries: generated from the catalog, every layout placeable."""

from __future__ import annotations

import yaml

from nos.mig.catalog import default_catalog
from nos.mig.geometries import parse_known_geometries
from tests.chart.conftest import CHART, chart_values
from tests.chart.known_geometries import MODELS, default_known_geometries


def test_values_yaml_holds_the_generated_default() -> None:
    """Regenerate with ``python -m tests.chart.known_geometries`` when the catalog changes."""
    assert chart_values()["gpuPartitioner"]["knownMigGeometries"] == default_known_geometries()


def test_every_default_geometry_is_placeable_without_warnings() -> None:
    text = yaml.safe_dump(chart_values()["gpuPartitioner"]["knownMigGeometries"])
    geometries, warnings = parse_known_geometries(text)
    assert warnings == []
    assert set(geometries) == set(MODELS)
    catalog = default_catalog()
    for name, allowed in geometries.items():
        assert len(allowed) >= 4, name
        full = catalog.model(name).full_profile.name
        assert {full: 1} in allowed, f"{name}: the whole-GPU layout must stay allowed"


def test_every_product_label_of_the_models_is_listed() -> None:
    catalog = default_catalog()
    listed = {m for entry in chart_values()["gpuPartitioner"]["knownMigGeometries"] for m in entry["models"]}
    for name in MODELS:
        assert set(catalog.model(name).products) <= listed, name


def test_readme_values_table_lists_exactly_the_values() -> None:
    """Every value has a row in the README's values table, and every row is a value."""
    keys = _table_keys()
    assert len(keys) == len(set(keys))
    assert set(keys) == set(_value_keys(chart_values()))


_MAPS = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "updateStrategy",
    "labels",
    "annotations",
    "nodeSelector",
    "affinity",
    "podAnnotations",
    "podLabels",
    "commonLabels",
}


def _value_keys(values: dict[str, object], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in _MAPS:
            out += _value_keys(value, path)
        else:
            out.append(path)
    return out


def _table_keys() -> list[str]:
    text = (CHART / "README.md").read_text().split("## Values", 1)[1].split("\n## ", 1)[0]
    return [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]
