"""The chart's known geometries: the default file is generated from the catalog and restricts
nothing; the seed's ``nos-gpu-partitioner.knownMigGeometries`` key is honoured; ``nos plan`` and the
partitioner with the chart's default ConfigMap give the same plan on the same snapshot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from nos.cli.main import cli
from nos.config import PartitionerConfig
from nos.kube.fake.memory import MemoryKube
from nos.kube.views.snapshot import load_snapshot
from nos.mig.catalog import default_catalog
from nos.mig.geometries import default_known_geometries, load_known_geometries, parse_known_geometries
from nos.partitioner.controller import Partitioner
from tests.chart.conftest import CHART, Render, chart_values, find
from tests.chart.known_geometries import DEFAULT_FILE, render_default

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "snapshot.yaml"
SEED = {"models": ["NVIDIA-A30"], "allowedGeometries": [{"2g.12gb": 2}]}
OURS = {"models": ["NVIDIA-A30"], "allowedGeometries": [{"1g.6gb": 4}]}


def _config_map(render: Render, values: dict[str, Any] | None = None) -> str:
    manifests = render(values or {})
    text: str = find(manifests, "ConfigMap", "-known-mig-geometries")["data"]["known-mig-geometries.yaml"]
    return text


def test_default_file_is_the_generated_one() -> None:
    """Regenerate with ``python -m tests.chart.known_geometries`` when the catalog changes."""
    assert DEFAULT_FILE.read_text() == render_default()
    assert yaml.safe_load(DEFAULT_FILE.read_text()) == default_known_geometries()


def test_default_lists_every_model_and_every_product() -> None:
    geometries, warnings = parse_known_geometries(DEFAULT_FILE.read_text())
    assert warnings == []
    catalog = default_catalog()
    assert set(geometries) == {m.name for m in catalog.models}
    listed = {label for entry in yaml.safe_load(DEFAULT_FILE.read_text()) for label in entry["models"]}
    for model in catalog.models:
        assert set(model.products) <= listed, model.name
        assert {model.full_profile.name: 1} in geometries[model.name], f"{model.name}: whole GPU"


def test_values_default_to_the_file(render: Render) -> None:
    assert chart_values()["gpuPartitioner"]["knownMigGeometries"] == []
    assert chart_values()["nos-gpu-partitioner"]["knownMigGeometries"] == []
    assert yaml.safe_load(_config_map(render)) == default_known_geometries()


def test_seed_key_is_honoured(render: Render) -> None:
    """The seed documents ``--set nos-gpu-partitioner.knownMigGeometries=...`` (the original chart)."""
    text = _config_map(render, {"nos-gpu-partitioner": {"knownMigGeometries": [SEED]}})
    assert yaml.safe_load(text) == [SEED]
    geometries, warnings = parse_known_geometries(text)
    assert warnings == [] and geometries == {"A30-24GB": [{"2g.12gb": 2}]}


def test_gpu_partitioner_key_wins_over_the_seed_key(render: Render) -> None:
    values = {"gpuPartitioner": {"knownMigGeometries": [OURS]}, "nos-gpu-partitioner": {"knownMigGeometries": [SEED]}}
    assert yaml.safe_load(_config_map(render, values)) == [OURS]


def test_nos_plan_and_the_partitioner_with_the_default_config_map_agree(render: Render, tmp_path: Path) -> None:
    """Same snapshot, same plan id: ``nos plan`` (no --geometries) and the partitioner reading the
    chart's default ConfigMap write the same annotations and place the same pods."""
    mounted = tmp_path / "known-mig-geometries.yaml"
    mounted.write_text(_config_map(render))
    geometries, warnings = load_known_geometries(mounted)
    assert warnings == [] and geometries

    result = CliRunner().invoke(cli, ["plan", "--json", "--plan-id", "1700000000", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    offline = json.loads(result.stdout)

    snapshot = load_snapshot(str(EXAMPLE))
    kube = MemoryKube()
    for node in snapshot.nodes:
        kube.add_node(node)
    for pod in snapshot.pods:
        kube.add_pod(pod)
    config = PartitionerConfig(batch_window_idle_seconds=0, batch_window_timeout_seconds=1)
    partitioner = Partitioner(kube, lambda: 1_700_000_000.0, config, geometries=geometries)
    cycle = asyncio.run(partitioner.cycle())
    assert cycle.plan is not None
    online = cycle.plan.to_json()

    assert online["nodes"] == offline["nodes"]
    assert online["placed"] == offline["placed"] and online["unplaced"] == offline["unplaced"]
    assert offline["placed"], "the example must place pods for the comparison to mean something"
    written = {name: (await_node(kube, name))["metadata"]["annotations"] for name in cycle.written}
    for name in cycle.written:
        for key, value in offline["nodes"][name]["annotations"].items():
            assert written[name][key] == value


def await_node(kube: MemoryKube, name: str) -> dict[str, Any]:
    node: dict[str, Any] = asyncio.run(kube.get("nodes", name))
    return node


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
