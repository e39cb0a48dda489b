"""The read-only probe (scripts/nvml_probe.py) against the fake library."""

from __future__ import annotations

import json
import runpy
from dataclasses import replace
from pathlib import Path

import pynvml
import pytest

from nos.gpu.probe import compare_profiles, main
from nos.gpu.simulated import SimulatedNvml
from nos.mig.catalog import default_catalog
from tests.gpu.fake_nvml_lib import FakeNvmlLib, installed

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nvml_probe.py"


def node() -> SimulatedNvml:
    sim = SimulatedNvml.new("H200-141GB", 1)
    sim.add_gpu("H200-141GB", mig_enabled=False)
    gi = sim.create_compute_instance(0, sim.create_gpu_instance(0, "3g.71gb", 4).gi_id)
    sim.create_gpu_instance(0, "1g.18gb", 0)
    sim.set_busy(0, gi.gi_id)
    return sim


def test_probe_reports_what_the_driver_has_and_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    sim = node()
    before = sim.to_dict()
    with installed(FakeNvmlLib(sim)) as lib:
        assert main() == 0
    report = json.loads(capsys.readouterr().out)
    assert report["driver_version"] == sim.driver_version
    enabled, disabled = report["gpus"]
    assert enabled["catalog_model"] == "H200-141GB" and enabled["catalog_differences"] == []
    assert {p["name"] for p in enabled["profiles"]} == set(default_catalog().model("H200-141GB").profiles)
    three = next(p for p in enabled["profiles"] if p["name"] == "3g.71gb")
    assert (three["profile_id"], three["placements"]) == (9, [[0, 4], [4, 4]])
    by_start = {g["start"]: g for g in enabled["gpu_instances"]}
    assert by_start[4]["device_uuids"][0].startswith("MIG-") and by_start[0]["compute_instances"] == []
    assert enabled["busy_gpu_instances"] == [by_start[4]["gi_id"]]
    assert set(disabled) == {"index", "name", "uuid", "mig", "catalog_model"}
    assert disabled["mig"] == {"current": False, "pending": False}
    assert lib.mutating_calls == [] and sim.to_dict() == before


def test_compare_profiles_lists_each_difference() -> None:
    model = default_catalog().model("A100-80GB")
    driver = SimulatedNvml.new("A100-80GB").profiles(0)
    assert compare_profiles(model, driver) == []
    changed = [
        replace(p, max_count=6, placements=p.placements[:-1]) if p.name == "1g.10gb" else p
        for p in driver
        if p.name != "1g.10gb+me"
    ]
    changed.append(replace(driver[0], name="1g.10gb-me", nvml_profile=13))
    diffs = compare_profiles(model, changed)
    assert "catalog profile 1g.10gb+me is not reported by the driver" in diffs
    assert "driver profile 1g.10gb-me (nvml_profile 13) is not in catalog model A100-80GB" in diffs
    assert "1g.10gb: max count 6 (catalog 7)" in diffs
    assert any(d.startswith("1g.10gb: placements") for d in diffs) and len(diffs) == 4


def test_script_runs_against_the_fake(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(FakeNvmlLib(node())), pytest.raises(SystemExit) as info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert info.value.code == 0
    assert len(json.loads(capsys.readouterr().out)["gpus"]) == 2


def test_exits_with_one_line_without_nvml(capsys: pytest.CaptureFixture[str]) -> None:
    lib = FakeNvmlLib(node())
    lib.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    with installed(lib):
        assert main() == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip().count("\n") == 0 and "cannot initialise NVML" in out.err
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in out.err
