"""``pip install .`` without extras: every command runs; what needs an extra says which, in one line.

Each command runs in a fresh interpreter where the extras' modules (nvidia-ml-py, grpcio, protobuf,
matplotlib) cannot be imported, as in a plain install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("pynvml", "grpc", "google.protobuf", "matplotlib")

_RUN = f"""
import importlib.abc, sys
BLOCKED = {EXTRAS!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from nos.cli.main import main
sys.argv = ["nos", *sys.argv[1:]]
main()
"""


def nos(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": "/nonexistent", "NODE_NAME": "node-1"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-c", _RUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("models",),
        ("models", "--json"),
        ("plan", "examples/snapshot.yaml"),
        ("simulate", "--help"),
        ("agent", "--help"),
        ("partitioner", "--help"),
        ("doctor", "--help"),
    ],
)
def test_command_runs_without_extras(args: tuple[str, ...]) -> None:
    result = nos(*args)
    assert result.returncode == 0, result.stderr


def test_agent_without_nvml_says_which_extra_in_one_line() -> None:
    result = nos("agent", "--once", "--spec", "examples/agent-spec.yaml")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("nos agent: ") and "pip install 'nos[agent]'" in line and "pynvml" in line


def test_offline_agent_on_a_simulated_node_needs_no_extra(tmp_path: Path) -> None:
    node = tmp_path / "node.yaml"
    node.write_text((ROOT / "examples" / "simulated-node.yaml").read_text())
    result = nos("agent", "--dry-run", "--backend", f"simulated:{node}")
    assert result.returncode == 0, result.stderr
    assert "# status annotations" in result.stdout


def test_blocker_really_blocks() -> None:
    """The test's premise: the extras cannot be imported in the child interpreter."""
    code = _RUN.split("from nos.cli.main")[0] + "import grpc\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "No module named 'grpc'" in result.stderr


def test_plot_without_matplotlib_says_which_extra(tmp_path: Path) -> None:
    result = nos("simulate", "--plot", str(tmp_path / "x.png"), "--policies", "nos")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line == "nos simulate: --plot needs the 'plot' extra: pip install 'nos[plot]'"
