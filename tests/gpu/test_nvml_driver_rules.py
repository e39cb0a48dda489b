"""The real adapter against what real drivers do and the old fake could not show (issue 14):
capabilities, PID namespaces, bindings older or newer than the driver, partition ids, compute
instances made by other tools, MIG device enumeration gaps and NVML's placement grid."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pynvml
import pytest

from nos.gpu.nvml import PynvmlNvml
from nos.gpu.port import NvmlFunctionNotFound, NvmlNoPermission
from nos.gpu.probe import probe
from nos.gpu.simulated import Caller, SimProcess, SimulatedNvml
from nos.mig.catalog import Catalog, default_catalog, load_catalog
from tests.gpu.fake_nvml_lib import R535_PROFILE_COUNT, FakeNvmlLib, installed

AGENT_BEFORE = Caller(config=True, monitor=False, pid_namespace="agent")
"""The chart's agent before issue 14: config capability only, its own PID namespace."""


Make = Callable[..., tuple[PynvmlNvml, FakeNvmlLib]]


@pytest.fixture
def make() -> Iterator[Make]:
    """The adapter over a fake library backed by ``sim`` (keyword arguments go to FakeNvmlLib)."""
    with ExitStack() as stack:

        def _make(sim: SimulatedNvml, **lib_args: int) -> tuple[PynvmlNvml, FakeNvmlLib]:
            lib = stack.enter_context(installed(FakeNvmlLib(sim, **lib_args)))
            nvml = PynvmlNvml(sim.catalog)
            stack.callback(nvml.close)
            return nvml, lib

        yield _make


def complete(sim: SimulatedNvml, profile: str, start: int, gpu: int = 0) -> int:
    return sim.create_compute_instance(gpu, sim.create_gpu_instance(gpu, profile, start).gi_id).gi_id


# ---------------------------------------------------------------------- 1. the monitor capability


def test_without_the_monitor_capability_listing_gpus_still_works(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB", caller=AGENT_BEFORE)
    nvml, lib = make(sim)
    assert [g.uuid for g in nvml.gpus()] == [g.uuid for g in sim.gpus()]
    assert "nvmlDeviceGetMemoryInfo" not in lib.calls  # a query the agent does not need is not made
    gi = nvml.create_compute_instance(0, nvml.create_gpu_instance(0, "3g.40gb", 4).gi_id)
    assert nvml.gpu_instances(0) == [gi]  # the config capability is enough to configure and read
    with pytest.raises(NvmlNoPermission, match="nvmlDeviceGetComputeRunningProcesses on GPU 0"):
        nvml.busy_gpu_instances(0)
    # what the old gpus() asked is denied exactly like on a real driver
    with pytest.raises(pynvml.NVMLError_NoPermission):
        pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))


def test_with_the_monitor_capability_processes_are_readable(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB", caller=Caller(monitor=True, config=True, pid_namespace="host"))
    gi = complete(sim, "2g.20gb", 2)
    sim.set_busy(0, gi, pid_namespace="pod-a")
    nvml, _ = make(sim)
    assert nvml.busy_gpu_instances(0) == {gi}


def test_without_any_mig_capability_placements_and_instances_are_denied(make: Make) -> None:
    """Why the probe and the acceptance script need root (or the capabilities the chart grants)."""
    sim = SimulatedNvml.new("A100-80GB")
    complete(sim, "7g.80gb", 0)
    sim.caller = Caller(config=False, monitor=False, pid_namespace="host")
    nvml, _ = make(sim)
    assert [g.mig_enabled for g in nvml.gpus()] == [True]
    with pytest.raises(NvmlNoPermission, match="nvmlDeviceGetGpuInstancePossiblePlacements"):
        nvml.profiles(0)
    report = probe(nvml, "x")
    assert "NVML_ERROR_NO_PERMISSION" in report["gpus"][0]["error"]


# ---------------------------------------------------------------------- 2. PID namespaces


def test_processes_outside_the_callers_pid_namespace_are_invisible(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB", caller=Caller(pid_namespace="agent"))
    a, b = complete(sim, "3g.40gb", 0), complete(sim, "3g.40gb", 4)
    sim.set_processes(0, [SimProcess(10, a, pid_namespace="pod-x"), SimProcess(11, b, pid_namespace="agent")])
    nvml, _ = make(sim)
    assert nvml.busy_gpu_instances(0) == {b}  # without hostPID the pod's process is not listed
    sim.caller = Caller(pid_namespace="host")
    assert nvml.busy_gpu_instances(0) == {a, b}


# ---------------------------------------------------------------------- 3. bindings newer than the driver


def test_a_driver_without_the_v3_process_query_falls_back_to_v2(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB")
    gi = complete(sim, "7g.80gb", 0)
    sim.set_busy(0, gi)
    nvml, lib = make(sim)
    lib.missing.add("nvmlDeviceGetComputeRunningProcesses_v3")
    with pytest.raises(pynvml.NVMLLibraryMismatchError):  # what pynvml raises: not an NVMLError
        pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(0))
    assert nvml.busy_gpu_instances(0) == {gi}
    assert "nvmlDeviceGetComputeRunningProcesses_v2" in lib.calls


def test_a_library_mismatch_is_an_nvml_error(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB")
    nvml, lib = make(sim)
    lib.missing |= {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"}
    with pytest.raises(NvmlFunctionNotFound, match="FUNCTION_NOT_FOUND") as info:
        nvml.busy_gpu_instances(0)
    assert info.value.code == 13


# ---------------------------------------------------------------------- 4. profile enumeration


BLACKWELL_VARIANTS = """
shapes:
  4-slot:
    memory_slots: 4
    compute_slices: 4
    kinds:
      1g:        {nvml_profile: 0, compute: 1, slots: 1, starts: [0, 1, 2, 3], max: 4}
      1g+gfx:    {nvml_profile: 10, compute: 1, slots: 1, starts: [0, 1, 2, 3], max: 4}
      1g+me.all: {nvml_profile: 15, compute: 1, slots: 1, starts: [0, 1, 2, 3], max: 1}
      2g:        {nvml_profile: 1, compute: 2, slots: 2, starts: [0, 2], max: 2}
      4g:        {nvml_profile: 3, compute: 4, slots: 4, starts: [0], max: 1}
models:
  - name: RTX-PRO-6000-96GB
    shape: 4-slot
    memory_gb: 96
    nvml_grid: 3
    products: [NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition]
    profiles: {1g: 1g.24gb, 1g+gfx: 1g.24gb+gfx, 1g+me.all: 1g.24gb+me.all, 2g: 2g.48gb, 4g: 4g.96gb}
"""


@pytest.fixture
def blackwell(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(BLACKWELL_VARIANTS)
    return load_catalog(path)


def test_profiles_past_the_bindings_count_are_found(
    make: Make, blackwell: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-ml-py 12.535-12.560 define NVML_GPU_INSTANCE_PROFILE_COUNT = 0x0A: enumerating up to it
    hides the Blackwell variants (0x0A +gfx, 0x0F +me.all) an R580 driver reports."""
    monkeypatch.setattr(pynvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0x0A)
    sim = SimulatedNvml.new("RTX-PRO-6000-96GB", catalog=blackwell)
    nvml, _ = make(sim)
    by_name = {p.name: p for p in nvml.profiles(0)}
    assert set(by_name) == set(blackwell.model("RTX-PRO-6000-96GB").profiles)
    assert (by_name["1g.24gb+gfx"].nvml_profile, by_name["1g.24gb+me.all"].nvml_profile) == (0x0A, 0x0F)
    gi = nvml.create_gpu_instance(0, "1g.24gb+me.all", 2)  # created with the driver's id
    assert gi.profile == "1g.24gb+me.all" and sim.layout(0)[0].profile == "1g.24gb+me.all"


def test_enumeration_stops_where_the_driver_says(make: Make) -> None:
    """An R535 driver under 13.x bindings: INVALID_ARGUMENT from 0x0A on ends the walk; a known index
    this GPU lacks (NOT_SUPPORTED) is skipped. Ids come from the driver, never from the index."""
    sim = SimulatedNvml.new("A100-80GB")
    nvml, lib = make(sim, profile_count=R535_PROFILE_COUNT)
    table = nvml.profiles(0)
    assert [p.nvml_profile for p in table] == [0, 1, 2, 3, 4, 7, 9]
    assert {p.name: p.profile_id for p in table}["1g.10gb"] == 19
    asked = lib.calls.count("nvmlDeviceGetGpuInstanceProfileInfoV")
    assert asked == int(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT) + 1  # 0..0x11 known, 0x12 refused: stop


def test_enumeration_goes_past_the_bindings_until_invalid_argument(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0x0A)
    sim = SimulatedNvml.new("A100-80GB")
    nvml, lib = make(sim)  # an R580 driver: 0x12 indices
    nvml.profiles(0)
    assert lib.calls.count("nvmlDeviceGetGpuInstanceProfileInfoV") == 0x12 + 1  # the last one is refused


# ---------------------------------------------------------------------- 5. ids from the driver


def test_a_recreated_instance_has_the_same_id_and_placement_but_a_new_uuid(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB")
    nvml, _ = make(sim)
    first = nvml.create_compute_instance(0, nvml.create_gpu_instance(0, "2g.20gb", 2).gi_id)
    nvml.destroy_gpu_instance(0, first.gi_id)
    second = nvml.create_compute_instance(0, nvml.create_gpu_instance(0, "2g.20gb", 2).gi_id)
    assert (second.gi_id, second.start, second.size) == (first.gi_id, first.start, first.size) == (4, 2, 2)
    assert second.device_uuids != first.device_uuids


# ---------------------------------------------------------------------- 6. other tools' instances


def test_split_and_empty_gpu_instances_are_read_as_such(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB")
    split = sim.create_gpu_instance(0, "3g.40gb", 4).gi_id
    sim.add_compute_instance(0, split, 1)
    sim.add_compute_instance(0, split, 2)
    smaller = sim.create_gpu_instance(0, "2g.20gb", 0).gi_id
    sim.add_compute_instance(0, smaller, 1)
    empty = sim.create_gpu_instance(0, "1g.10gb", 2).gi_id
    nvml, lib = make(sim)
    got = {g.gi_id: g for g in nvml.gpu_instances(0)}
    assert got == {g.gi_id: g for g in sim.gpu_instances(0)}
    assert (len(got[split].compute_instances), len(got[split].device_uuids), got[split].split) == (2, 2, True)
    assert (got[smaller].split, got[empty].split, got[empty].compute_instances) == (True, False, ())
    sim.set_processes(0, [SimProcess(5, split, 1)])
    assert nvml.busy_gpu_instances(0) == {split}
    sim.set_processes(0, [])
    lib.calls.clear()
    nvml.destroy_gpu_instance(0, split)
    assert lib.mutating_calls == ["nvmlComputeInstanceDestroy"] * 2 + ["nvmlGpuInstanceDestroy"]


def test_mig_device_indices_answering_an_error_are_skipped(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB")
    a, b = complete(sim, "3g.40gb", 0), complete(sim, "3g.40gb", 4)
    nvml, lib = make(sim)
    lib.mig_index_errors = {0: pynvml.NVML_ERROR_INVALID_ARGUMENT, 2: pynvml.NVML_ERROR_NOT_FOUND}
    assert nvml.gpu_instances(0) == sim.gpu_instances(0)
    assert all(g.device_uuids for g in nvml.gpu_instances(0)) and {a, b} == {1, 2}


# ---------------------------------------------------------------------- the NVML placement grid


@pytest.mark.parametrize(("model", "grid"), [("RTX-PRO-6000-96GB", 3), ("A100-80GB", 1), ("H200-141GB", 1)])
def test_placements_are_translated_by_the_models_grid(make: Make, model: str, grid: int) -> None:
    sim = SimulatedNvml.new(model)
    nvml, lib = make(sim)
    assert sorted(nvml.profiles(0), key=lambda p: p.name) == sorted(sim.profiles(0), key=lambda p: p.name)
    if grid == 3:  # what NVML itself reports for the RTX PRO 6000: a 12-unit grid
        raw = {p.name: [(pl.start, pl.size) for pl in _raw_placements(p.profile_id)] for p in sim.profile_table(0)}
        plain = {"1g.24gb": [(0, 3), (3, 3), (6, 3), (9, 3)], "2g.48gb": [(0, 6), (6, 6)], "4g.96gb": [(0, 12)]}
        assert {k: v for k, v in raw.items() if k in plain} == plain
        for name, placements in raw.items():  # +me, +gfx, -me, +me.all variants: their plain profile's
            assert placements == plain[sim.model(0).profile(name).base], name
    one = sim.model(0).fill_order[-1]
    last = one.starts[-1]
    gi = nvml.create_compute_instance(0, nvml.create_gpu_instance(0, one.name, last).gi_id)
    assert lib.placements_created == [(last * grid, one.slots * grid)]
    assert (gi.start, gi.size) == (last, one.slots) and nvml.gpu_instances(0) == sim.gpu_instances(0)


def _raw_placements(profile_id: int) -> list[pynvml.c_nvmlGpuInstancePlacement_t]:
    arr = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = pynvml.c_uint(8)
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, pynvml.byref(count))
    return [arr[k] for k in range(count.value)]


# ---------------------------------------------------------------------- the nvidia-ml-py pin

BINDINGS_PROFILE_COUNT = {
    "12.535": 0x0A,
    "12.560": 0x0A,
    "12.570": 0x0D,
    "12.575": 0x11,
    "13.580": 0x11,
    "13.615": 0x12,
}
"""NVML_GPU_INSTANCE_PROFILE_COUNT in each nvidia-ml-py release's pynvml.py (0x0A-0x0C +gfx came with
12.570, 0x0D-0x10 -me/+me.all with 12.575, 0x11 3-slice +gfx with 13.6xx)."""


def test_the_pinned_bindings_know_every_catalog_profile() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    pins = set(re.findall(r'"nvidia-ml-py>=(\d+\.\d+)[.\d]*"', pyproject))
    assert len(pins) == 1, pins  # the agent extra and the dev extra agree
    known = BINDINGS_PROFILE_COUNT[pins.pop()]
    deepest = max(p.nvml_profile for m in default_catalog().models for p in m.profiles.values())
    assert deepest < known <= int(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)


def test_reading_instances_asks_no_placement(make: Make) -> None:
    sim = SimulatedNvml.new("A100-80GB")
    complete(sim, "3g.40gb", 4)
    nvml, lib = make(sim)
    assert nvml.gpu_instances(0) == sim.gpu_instances(0)
    nvml.create_compute_instance(0, nvml.create_gpu_instance(0, "3g.40gb", 0).gi_id)
    lib.calls.clear()
    nvml.gpu_instances(0)
    assert "nvmlDeviceGetGpuInstancePossiblePlacements_v2" not in lib.calls
    assert "nvmlDeviceGetMemoryInfo" not in lib.calls
