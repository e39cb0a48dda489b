from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

import nos.gpu.nvml
from nos.cli.agent import agent
from nos.gpu.port import NvmlError
from nos.gpu.simulated import SimulatedNvml
from nos.mig.layout import Instance

EXAMPLES = Path(__file__).parents[2] / "examples"
SPEC = EXAMPLES / "agent-spec.yaml"


@pytest.fixture
def node_file(tmp_path: Path) -> Path:
    """A simulated node: two A100-80GB, GPU 0 holding one 7g.80gb, GPU 1 empty."""
    path = tmp_path / "node.yaml"
    path.write_text(
        yaml.safe_dump(
            {"node": "gpu-7", "gpus": [{"model": "A100-80GB", "instances": ["7g.80gb@0"]}, {"model": "A100-80GB"}]}
        )
    )
    return path


def run_agent(node_file: Path, *args: str) -> list[str]:
    socket = str(node_file.parent / "no-kubelet.sock")
    return ["--backend", f"simulated:{node_file}", "--podresources-socket", socket, *args]


def layouts(node_file: Path) -> list[tuple[Instance, ...]]:
    sim = SimulatedNvml.load(node_file)
    return [sim.layout(g) for g in range(len(sim.gpus()))]


def test_dry_run_prints_operations_and_touches_nothing(node_file: Path) -> None:
    before = node_file.read_text()
    result = CliRunner().invoke(agent, run_agent(node_file, "--spec", str(SPEC), "--dry-run", "--once"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "would gpu 0: destroy 7g.80gb@0 (gi 0): not in the desired layout"
    assert "would gpu 0: create 3g.40gb@4" in lines
    assert "would gpu 1: create 1g.10gb@6" in lines  # counts only: 3 x 2g then the 1g at slot 6
    assert node_file.read_text() == before
    assert layouts(node_file) == [(Instance(0, "7g.80gb"),), ()]


def test_spec_mode_applies_and_prints_status(node_file: Path) -> None:
    result = CliRunner().invoke(agent, run_agent(node_file, "--spec", str(SPEC), "--once", "--node", "gpu-7"))
    assert result.exit_code == 0, result.output
    status = yaml.safe_load(result.output.split("# status annotations\n", 1)[1])
    assert status["nos.nebuly.com/status-placement-gpu-0"] == (
        "1g.10gb@0:free,1g.10gb@1:free,2g.20gb@2:free,3g.40gb@4:free"
    )
    assert status["nos.nebuly.com/status-gpu-1-2g.20gb-free"] == "3"
    assert status["nos.nebuly.com/status-partitioning-plan"] == "1764374400"


def test_malformed_spec_file_is_a_clear_error(tmp_path: Path, node_file: Path) -> None:
    bad = tmp_path / "spec.yaml"
    bad.write_text("nos.nebuly.com/spec-gpu-0-1g.10gb: 2\n")
    before = node_file.read_text()
    result = CliRunner().invoke(agent, run_agent(node_file, "--spec", str(bad), "--once"))
    assert result.exit_code == 2  # bad input
    [line] = result.output.strip().splitlines()
    assert line.startswith("agent: ") and "must be strings" in line
    assert node_file.read_text() == before


def test_without_spec_or_kubeconfig_exits_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(agent, ["--node", "n1", "--once"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("agent: no Kubernetes API access") and "--spec" in line


def test_node_name_required_without_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    result = CliRunner().invoke(agent, ["--once"])
    assert result.exit_code == 2 and "NODE_NAME" in result.output


def test_bad_backend() -> None:
    result = CliRunner().invoke(agent, ["--spec", str(SPEC), "--backend", "cuda", "--once"])
    assert result.exit_code == 2 and "simulated:FILE" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_nvml_unavailable_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> None:
        raise NvmlError("nvmlInit failed: NVML_ERROR_LIBRARY_NOT_FOUND (12)", 12)

    monkeypatch.setattr(nos.gpu.nvml, "PynvmlNvml", no_driver)
    result = CliRunner().invoke(agent, ["--spec", str(SPEC), "--backend", "nvml", "--once"])
    assert result.exit_code == 1
    assert not isinstance(result.exception, NvmlError)
    [line] = result.output.strip().splitlines()
    assert line.startswith("agent: cannot use NVML: nvmlInit failed: NVML_ERROR_LIBRARY_NOT_FOUND (12)")
    assert "simulated:FILE" in line


def test_broken_simulated_node_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"gpus": [{"model": "A100-80GB", "instances": ["3g.40gb@0", "2g.20gb@2"]}]}))
    result = CliRunner().invoke(agent, run_agent(path, "--spec", str(SPEC), "--once"))
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"agent: cannot load simulated node {path}: ") and "2g.20gb@2" in line


def test_simulated_backend_end_to_end_loads_applies_and_saves(node_file: Path) -> None:
    """``--backend simulated:FILE --spec FILE``: the node file is loaded, the state after applying is
    saved back into it, and the next run continues from there."""
    args = run_agent(node_file, "--spec", str(SPEC))

    dry = CliRunner().invoke(agent, [*args, "--dry-run", "--once"])
    assert dry.exit_code == 0, dry.output
    assert layouts(node_file) == [(Instance(0, "7g.80gb"),), ()]

    result = CliRunner().invoke(agent, [*args, "--once"])
    assert result.exit_code == 0, result.output
    saved = SimulatedNvml.load(node_file)
    assert [str(i) for i in saved.layout(0)] == ["1g.10gb@0", "1g.10gb@1", "2g.20gb@2", "3g.40gb@4"]
    assert [str(i) for i in saved.layout(1)] == ["2g.20gb@0", "2g.20gb@2", "2g.20gb@4", "1g.10gb@6"]
    assert all(g.device_uuids for gpu in (0, 1) for g in saved.gpu_instances(gpu))  # complete instances
    state = saved.to_dict()
    again = CliRunner().invoke(agent, [*args, "--once"])
    assert again.exit_code == 0, again.output
    assert again.output.startswith("nothing to do")
    assert SimulatedNvml.load(node_file).to_dict() == state  # ids and device UUIDs kept


def test_example_simulated_node(tmp_path: Path) -> None:
    """examples/simulated-node.yaml as the docs use it: the busy 1g.10gb@0 and the 2g.20gb@2 stay,
    the half-created 3g.40gb@4 is completed (wanted exactly there), GPU 1 gets its counts."""
    node_file = tmp_path / "node.yaml"
    shutil.copy(EXAMPLES / "simulated-node.yaml", node_file)
    before = SimulatedNvml.load(node_file)
    kept = {(g.gi_id, g.device_uuids) for g in before.gpu_instances(0) if g.start in (0, 2)}
    half = [g.gi_id for g in before.gpu_instances(0) if g.start == 4]
    args = run_agent(node_file, "--spec", str(SPEC), "--once")

    result = CliRunner().invoke(agent, args)
    assert result.exit_code == 0, result.output
    assert f"applied gpu 0: complete 3g.40gb@4 (gi {half[0]}): half-created and wanted" in result.output.splitlines()
    after = SimulatedNvml.load(node_file)
    assert [str(i) for i in after.layout(0)] == ["1g.10gb@0*", "1g.10gb@1", "2g.20gb@2", "3g.40gb@4"]
    assert Counter(i.profile for i in after.layout(1)) == {"1g.10gb": 1, "2g.20gb": 3}
    assert kept <= {(g.gi_id, g.device_uuids) for g in after.gpu_instances(0)}
    assert [g.gi_id for g in after.gpu_instances(0) if g.start == 4] == half
    assert after.processes(0) == before.processes(0)

    again = CliRunner().invoke(agent, args)
    assert again.exit_code == 0 and again.output.startswith("nothing to do"), again.output


def test_offline_dry_run_works_first_time_with_the_node_name_from_the_file(tmp_path: Path) -> None:
    """``nos agent --dry-run --backend simulated:FILE``: no cluster, no --spec, no --node: the node is
    the file's, nothing is planned (no spec yet) and the status it would report is printed."""
    node_file = tmp_path / "node.yaml"
    shutil.copy(EXAMPLES / "simulated-node.yaml", node_file)
    before = node_file.read_text()
    result = CliRunner().invoke(agent, run_agent(node_file, "--dry-run"), env={"NODE_NAME": None})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("nothing to do")
    status = yaml.safe_load(result.output.split("# status annotations\n", 1)[1])
    assert status["nos.nebuly.com/status-placement-gpu-0"] == "1g.10gb@0:used,2g.20gb@2:free"
    assert result.output.splitlines()[-1] == "# node example-node: the simulated node file's name (--node to choose)"
    assert node_file.read_text() == before


def test_offline_node_name_comes_from_the_simulated_file(tmp_path: Path, node_file: Path) -> None:
    """The spec file's bare annotations are applied to the simulated file's node (``gpu-7``)."""
    from nos.cli import agent as agent_cli

    seen: list[str] = []
    real = agent_cli.MigAgent

    def spy(node_name: str, *args: object, **kwargs: object) -> object:
        seen.append(node_name)
        return real(node_name, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(agent_cli, "MigAgent", spy)
        result = CliRunner().invoke(
            agent, run_agent(node_file, "--spec", str(SPEC), "--dry-run"), env={"NODE_NAME": None}
        )
    assert result.exit_code == 0, result.output
    assert seen == ["gpu-7"]


def test_log_options_are_the_partitioners() -> None:
    from nos.cli.partitioner import partitioner

    def names(command: object) -> set[str]:
        return {o for p in command.params for o in p.opts}  # type: ignore[attr-defined]

    shared = {"--log-level", "--log-format", "--verbose", "--kubeconfig", "--config", "--metrics-port", "--health-port"}
    assert shared <= names(agent) and shared <= names(partitioner)
    for command in (agent, partitioner):
        assert all(p.help for p in command.params if isinstance(p, click.Option)), command.name
