"""scripts/hardware-acceptance against the fake library: a verdict per check, read-only by default."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from nos.gpu import acceptance
from nos.gpu.acceptance import host_pid_namespace, main, render, run
from nos.gpu.nvml import PynvmlNvml
from nos.gpu.simulated import Caller, SimulatedNvml
from tests.gpu.fake_nvml_lib import FakeNvmlLib, installed

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "hardware-acceptance"
CHART = Caller(config=True, monitor=True, pid_namespace="agent")


def node(model: str = "A100-80GB", caller: Caller | None = None) -> SimulatedNvml:
    """Two GPUs of ``model``, GPU 0 with a busy whole-GPU instance; then ``caller`` calls."""
    sim = SimulatedNvml.new(model, 2)
    gi = sim.create_compute_instance(0, sim.create_gpu_instance(0, sim.model(0).full_profile.name, 0).gi_id)
    sim.set_busy(0, gi.gi_id)
    sim.caller = caller or Caller()
    return sim


def verdicts(sim: SimulatedNvml, host_pid: bool = True, write: int | None = None) -> dict[str, str]:
    with installed(FakeNvmlLib(sim)) as lib:
        nvml = PynvmlNvml()
        try:
            checks = run(nvml, "580.1", write_gpu=write, host_pid=lambda: host_pid)
        finally:
            nvml.close()
    if write is None:
        assert lib.mutating_calls == []  # read-only
    return {c.name: c.verdict for c in checks}


@pytest.mark.parametrize("model", ["A100-80GB", "H200-141GB", "A30-24GB", "RTX-PRO-6000-96GB"])
def test_every_read_only_check_passes_on_a_good_node(model: str) -> None:
    got = verdicts(node(model))
    assert set(got.values()) == {"PASS"}, got
    assert list(got) == [
        "nvml",
        *[
            f"gpu{i} {c}"
            for i in (0, 1)
            for c in ("model", "mig mode", "profiles", "instances", "instance ids", "processes")
            if (i, c) != (1, "instance ids")
        ],
        "pid namespace",
    ]


def test_the_chart_before_issue_14_fails_the_process_check() -> None:
    got = verdicts(node(caller=Caller(config=True, monitor=False, pid_namespace="agent")), host_pid=False)
    assert (got["gpu0 profiles"], got["gpu0 instances"]) == ("PASS", "PASS")
    assert (got["gpu0 processes"], got["pid namespace"]) == ("FAIL", "WARN")


def test_as_the_chart_runs_the_agent_only_the_pid_namespace_warns() -> None:
    got = verdicts(node(caller=CHART), host_pid=False)
    assert [k for k, v in got.items() if v != "PASS"] == ["pid namespace"]


def test_without_privileges_placements_are_denied() -> None:
    got = verdicts(node(caller=Caller(config=False, monitor=False, pid_namespace="host")))
    assert got["gpu0 profiles"] == "FAIL" and "gpu0 instances" not in got


def test_unknown_model_disabled_mig_split_and_catalog_drift_are_reported() -> None:
    sim = SimulatedNvml.new("A100-80GB")
    sim.add_gpu("A100-80GB", mig_enabled=False, mig_pending=True)
    sim.add_gpu("A100-80GB", name="NVIDIA Mystery GPU")
    split = sim.create_gpu_instance(0, "3g.40gb", 0).gi_id
    sim.add_compute_instance(0, split, 1)
    got = verdicts(sim)
    assert got["gpu0 instances"] == "WARN"
    assert (got["gpu1 mig mode"], got["gpu1 mig checks"]) == ("FAIL", "SKIP")
    assert (got["gpu2 model"], got["gpu2 mig checks"]) == ("FAIL", "SKIP")


def test_write_mode_round_trips_every_profile_and_leaves_the_gpu_empty() -> None:
    sim = node("A30-24GB")
    got = verdicts(sim, write=1)
    writes = {k: v for k, v in got.items() if "write" in k}
    assert set(writes) == {f"gpu1 write {p}" for p in sim.model(1).profiles} and set(writes.values()) == {"PASS"}
    assert sim.gpu_instances(1) == []
    assert verdicts(sim, write=0)["gpu0 write"] == "FAIL"  # refuses a GPU that has instances


def test_output_format_and_exit_status(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceptance, "host_pid_namespace", lambda: True)
    with installed(FakeNvmlLib(node())):
        assert main([]) == 0
        table = capsys.readouterr().out.splitlines()
        assert main(["--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    assert table[0].startswith("PASS  nvml") and "driver 570.133.20" in table[0]
    assert any(line.startswith("PASS  gpu0 profiles ") and "match the catalog" in line for line in table)
    assert table[-1] == f"verdict: PASS ({len(table) - 1} passed, 0 warnings, 0 failed, 0 skipped)"
    assert report["ok"] is True and {c["verdict"] for c in report["checks"]} == {"PASS"}
    with installed(FakeNvmlLib(node(caller=Caller(monitor=False)))):
        assert main([]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("verdict: FAIL (")


def test_the_script_runs_from_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeNvmlLib(node())
    lib.init_error = 9  # NVML_ERROR_DRIVER_NOT_LOADED
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)])
    with installed(lib), pytest.raises(SystemExit) as info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert info.value.code == 1


def test_host_pid_namespace_is_told_by_kthreadd(tmp_path: Path) -> None:
    assert host_pid_namespace(tmp_path) is False
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "comm").write_text("kthreadd\n")
    assert host_pid_namespace(tmp_path) is True


def test_render_counts_each_verdict() -> None:
    checks = [
        acceptance.Check("a", "PASS", "x"),
        acceptance.Check("bb", "WARN", "y"),
        acceptance.Check("c", "SKIP", "z"),
    ]
    assert render(checks).splitlines() == [
        "PASS  a   x",
        "WARN  bb  y",
        "SKIP  c   z",
        "verdict: PASS (1 passed, 1 warnings, 0 failed, 1 skipped)",
    ]
