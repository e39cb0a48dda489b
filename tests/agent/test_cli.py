from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import nos.cli.agent as cli_agent
from nos.cli.agent import agent
from nos.mig.layout import Instance
from tests.agent.agent_fakes import FakeNvml

SPEC = Path(__file__).parents[2] / "examples" / "agent-spec.yaml"


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    nvml = FakeNvml(gpus=2)
    nvml.add(0, "7g.80gb", 0)
    monkeypatch.setattr(cli_agent, "_backend", lambda spec: cli_agent._Backend(nvml))
    return nvml


def test_dry_run_prints_operations_and_touches_nothing(fake_backend: FakeNvml, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        agent, ["--spec", str(SPEC), "--dry-run", "--once", "--podresources-socket", str(tmp_path / "none")]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "would gpu 0: destroy 7g.80gb@0 (gi 8): not in the desired layout"
    assert "would gpu 0: create 3g.40gb@4" in lines
    assert "would gpu 1: create 1g.10gb@6" in lines  # counts only: 3 x 2g then the 1g at slot 6
    assert fake_backend.mutations == 0
    assert fake_backend.layout(0) == (Instance(0, "7g.80gb"),)


def test_spec_mode_applies_and_prints_status(fake_backend: FakeNvml, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        agent,
        ["--spec", str(SPEC), "--once", "--node", "gpu-7", "--podresources-socket", str(tmp_path / "none")],
    )
    assert result.exit_code == 0, result.output
    status = yaml.safe_load(result.output.split("# status annotations\n", 1)[1])
    assert status["nos.nebuly.com/status-placement-gpu-0"] == (
        "1g.10gb@0:free,1g.10gb@1:free,2g.20gb@2:free,3g.40gb@4:free"
    )
    assert status["nos.nebuly.com/status-gpu-1-2g.20gb-free"] == "3"
    assert status["nos.nebuly.com/status-partitioning-plan"] == "1764374400"


def test_malformed_spec_file_is_a_clear_error(tmp_path: Path, fake_backend: FakeNvml) -> None:
    bad = tmp_path / "spec.yaml"
    bad.write_text("nos.nebuly.com/spec-gpu-0-1g.10gb: 2\n")
    result = CliRunner().invoke(agent, ["--spec", str(bad), "--once"])
    assert result.exit_code == 1
    assert "must be strings" in result.output


def test_without_spec_or_kubeconfig_exits_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(agent, ["--node", "n1", "--once"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: no Kubernetes API access") and "--spec" in line


def test_node_name_required_without_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    result = CliRunner().invoke(agent, ["--once"])
    assert result.exit_code == 1 and "NODE_NAME" in result.output


def test_bad_backend() -> None:
    result = CliRunner().invoke(agent, ["--spec", str(SPEC), "--backend", "cuda", "--once"])
    assert result.exit_code == 2 and "simulated:FILE" in result.output


def test_simulated_backend_end_to_end_loads_applies_and_saves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Wiring of ``--backend simulated:FILE --spec FILE``: the node file is loaded through
    ``SimulatedNvml.load`` and the state after applying is saved back with ``save``."""
    stand_in = types.ModuleType("nos.gpu.simulated")
    stand_in.SimulatedNvml = FakeNvml  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nos.gpu.simulated", stand_in)
    node_file = tmp_path / "node.yaml"
    node_file.write_text(yaml.safe_dump({"model": "A100-80GB", "gpus": [["7g.80gb@0"], []]}))
    args = ["--backend", f"simulated:{node_file}", "--spec", str(SPEC), "--podresources-socket", str(tmp_path / "x")]

    dry = CliRunner().invoke(agent, [*args, "--dry-run", "--once"])
    assert dry.exit_code == 0, dry.output
    assert yaml.safe_load(node_file.read_text())["gpus"][0] == ["7g.80gb@0"]

    result = CliRunner().invoke(agent, [*args, "--once"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load(node_file.read_text())["gpus"]
    assert saved == [
        ["1g.10gb@0", "1g.10gb@1", "2g.20gb@2", "3g.40gb@4"],
        ["2g.20gb@0", "2g.20gb@2", "2g.20gb@4", "1g.10gb@6"],
    ]
    again = CliRunner().invoke(agent, [*args, "--once"])
    assert again.output.startswith("nothing to do")
