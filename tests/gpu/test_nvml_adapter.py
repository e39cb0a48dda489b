"""PynvmlNvml's real code paths (ctypes structs, handles, error codes) against the fake library,
whose answers come from SimulatedNvml: the adapter must see exactly what the simulator holds."""

from __future__ import annotations

import pynvml
import pytest

from nos.gpu.nvml import PynvmlNvml, error_name, profile_name, translate
from nos.gpu.port import (
    NvmlError,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNoPermission,
    NvmlNotFound,
    NvmlNotSupported,
)
from nos.gpu.simulated import SimProcess, SimulatedNvml
from tests.gpu.conftest import Rig
from tests.gpu.fake_nvml_lib import FakeNvmlLib, installed


def test_lists_gpus_with_names_uuids_memory_and_mig_modes(rig: Rig) -> None:
    assert rig.nvml.gpus() == rig.sim.gpus()
    assert [(g.mig_enabled, g.mig_pending) for g in rig.nvml.gpus()] == [(True, True), (True, True), (False, True)]
    assert rig.nvml.driver_version() == rig.sim.driver_version
    assert rig.lib.initialised == 1


def test_profile_table_by_index_with_driver_ids_and_placements(rig: Rig) -> None:
    table = rig.nvml.profiles(0)
    assert sorted(table, key=lambda p: p.name) == sorted(rig.sim.profiles(0), key=lambda p: p.name)
    assert [p.nvml_profile for p in table] == sorted(p.nvml_profile for p in table)  # iterated by index
    one = next(p for p in table if p.name == "1g.10gb")
    assert (one.nvml_profile, one.profile_id) == (0, 19)  # the "MIG " prefix is gone, id != index


def test_create_at_placement_then_compute_instance(rig: Rig) -> None:
    gi = rig.nvml.create_gpu_instance(0, "3g.40gb", 4)
    assert (gi.profile, gi.start, gi.size, gi.compute_instances, gi.device_uuids) == ("3g.40gb", 4, 4, (), ())
    assert rig.sim.gpu_instances(0) == [gi]
    done = rig.nvml.create_compute_instance(0, gi.gi_id)
    assert done.compute_instances == (0,)
    assert done == rig.sim.gpu_instances(0)[0]  # same UUID as the simulator's MIG device
    assert rig.lib.mutating_calls == [
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlGpuInstanceCreateComputeInstance",
    ]


def test_lists_instances_like_the_simulator(rig: Rig) -> None:
    for profile, start in [("1g.10gb", 0), ("1g.20gb", 2), ("2g.20gb", 4)]:
        gi = rig.sim.create_gpu_instance(1, profile, start)
        if start != 2:
            rig.sim.create_compute_instance(1, gi.gi_id)
    rig.sim.create_gpu_instance(1, "1g.10gb+me", 6)
    assert rig.nvml.gpu_instances(1) == rig.sim.gpu_instances(1)
    assert rig.nvml.gpu_instances(0) == []


def test_destroy_takes_compute_instances_first(rig: Rig) -> None:
    gi = rig.nvml.create_compute_instance(0, rig.nvml.create_gpu_instance(0, "7g.80gb", 0).gi_id)
    rig.lib.calls.clear()
    rig.nvml.destroy_gpu_instance(0, gi.gi_id)
    assert rig.lib.mutating_calls == ["nvmlComputeInstanceDestroy", "nvmlGpuInstanceDestroy"]
    assert rig.sim.gpu_instances(0) == []
    half = rig.nvml.create_gpu_instance(0, "4g.40gb", 0)
    rig.lib.calls.clear()
    rig.nvml.destroy_gpu_instance(0, half.gi_id)
    assert rig.lib.mutating_calls == ["nvmlGpuInstanceDestroy"]


def test_busy_instances_from_the_process_list(rig: Rig) -> None:
    a = rig.sim.create_compute_instance(0, rig.sim.create_gpu_instance(0, "3g.40gb", 0).gi_id).gi_id
    b = rig.sim.create_compute_instance(0, rig.sim.create_gpu_instance(0, "3g.40gb", 4).gi_id).gi_id
    assert rig.nvml.busy_gpu_instances(0) == set()
    rig.sim.set_processes(0, [SimProcess(10, b), SimProcess(11, b)])
    assert rig.nvml.busy_gpu_instances(0) == {b} and a != b


# ---------------------------------------------------------------------- error translation


def test_in_use_when_destroying_a_busy_instance(rig: Rig) -> None:
    gi = rig.nvml.create_compute_instance(0, rig.nvml.create_gpu_instance(0, "2g.20gb", 0).gi_id)
    rig.sim.set_busy(0, gi.gi_id)
    with pytest.raises(NvmlInUse) as info:
        rig.nvml.destroy_gpu_instance(0, gi.gi_id)
    assert info.value.code == 19
    assert "nvmlComputeInstanceDestroy on GPU 0" in str(info.value) and "NVML_ERROR_IN_USE" in str(info.value)
    assert rig.sim.gpu_instances(0) == [gi]


def test_insufficient_resources_on_overlap(rig: Rig) -> None:
    rig.nvml.create_gpu_instance(0, "1g.10gb", 1)
    with pytest.raises(NvmlInsufficientResources) as info:
        rig.nvml.create_gpu_instance(0, "4g.40gb", 0)
    assert info.value.code == 23 and "(4g.40gb@0)" in str(info.value)


def test_not_supported_on_a_mig_disabled_gpu(rig: Rig) -> None:
    for call in (
        lambda: rig.nvml.profiles(2),
        lambda: rig.nvml.gpu_instances(2),
        lambda: rig.nvml.create_gpu_instance(2, "7g.80gb", 0),
        lambda: rig.nvml.busy_gpu_instances(2),
    ):
        with pytest.raises(NvmlNotSupported, match="GPU 2 does not have MIG mode enabled"):
            call()
    assert rig.lib.mutating_calls == []


def test_invalid_arguments_and_not_found(rig: Rig) -> None:
    with pytest.raises(NvmlInvalidArgument, match="possible starts"):
        rig.nvml.create_gpu_instance(0, "2g.20gb", 1)
    with pytest.raises(NvmlInvalidArgument, match=r"no GPU instance profile '1g\.5gb'"):
        rig.nvml.create_gpu_instance(0, "1g.5gb", 0)
    with pytest.raises(NvmlNotFound, match="nvmlDeviceGetGpuInstanceById on GPU 0"):
        rig.nvml.destroy_gpu_instance(0, 99)
    with pytest.raises(NvmlInvalidArgument, match="nvmlDeviceGetHandleByIndex on GPU 7"):
        rig.nvml.profiles(7)
    assert rig.lib.mutating_calls == []


def test_driver_errors_keep_their_code_and_name(rig: Rig) -> None:
    rig.sim.fail_next("create_gpu_instance", NvmlNoPermission("no"))
    with pytest.raises(NvmlNoPermission):
        rig.nvml.create_gpu_instance(0, "7g.80gb", 0)
    rig.sim.fail_next("create_compute_instance", NvmlError("lost", code=pynvml.NVML_ERROR_GPU_IS_LOST))
    gi = rig.nvml.create_gpu_instance(0, "7g.80gb", 0)
    with pytest.raises(NvmlError) as info:
        rig.nvml.create_compute_instance(0, gi.gi_id)
    assert type(info.value) is NvmlError
    assert (info.value.code, info.value.nvml_name) == (15, "NVML_ERROR_GPU_IS_LOST")


def test_init_failure_is_an_nvml_error() -> None:
    lib = FakeNvmlLib(SimulatedNvml.new("A30"))
    lib.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    with installed(lib), pytest.raises(NvmlError, match="nvmlInit failed: NVML_ERROR_DRIVER_NOT_LOADED"):
        PynvmlNvml()


def test_fake_is_uninstalled_afterwards() -> None:
    before = pynvml.nvmlLib
    with installed(FakeNvmlLib(SimulatedNvml.new("A30"))) as lib:
        assert pynvml.nvmlLib is lib
    assert pynvml.nvmlLib is before


def test_helpers() -> None:
    assert profile_name("MIG 1g.10gb+me") == "1g.10gb+me" and profile_name(b"MIG 7g.80gb") == "7g.80gb"
    assert error_name(23) == "NVML_ERROR_INSUFFICIENT_RESOURCES" and error_name(12345) == "NVML error 12345"
    err = translate(pynvml.NVMLError(pynvml.NVML_ERROR_IN_USE), "nvmlGpuInstanceDestroy", 1, "GPU instance 9")
    assert isinstance(err, NvmlInUse)
    assert str(err) == "nvmlGpuInstanceDestroy on GPU 1 (GPU instance 9) failed: NVML_ERROR_IN_USE (19)"
