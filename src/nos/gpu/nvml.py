"""``PynvmlNvml``: the ``Nvml`` port on real GPUs through nvidia-ml-py (``import pynvml``).

A thin adapter: every MIG rule is the driver's, and every ``pynvml.NVMLError`` becomes the port's
``NvmlError`` subclass for its code, with the call and the GPU in the message (the agent logs and
reports these as they are). Creation always names the placement
(``nvmlDeviceCreateGpuInstanceWithPlacement``): the planner chose it, NVML must not pick another.

Handles are looked up per call (cheap) rather than cached: a GPU reset invalidates them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pynvml

from nos.gpu.port import (
    GpuInfo,
    GpuInstanceInfo,
    NvmlError,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNoPermission,
    NvmlNotFound,
    NvmlNotSupported,
    ProfileInfo,
)

_ERRORS: dict[int, type[NvmlError]] = {
    c.code: c
    for c in (
        NvmlInvalidArgument,
        NvmlNotSupported,
        NvmlNoPermission,
        NvmlNotFound,
        NvmlInUse,
        NvmlInsufficientResources,
    )
}
_MIB = 1024 * 1024
_NOT_AVAILABLE = 0xFFFFFFFF
"""gpuInstanceId of a process outside any MIG device."""


def error_name(code: int) -> str:
    """``NVML_ERROR_IN_USE`` for 19 (the names come from pynvml, so new codes need no table here)."""
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == code:
            return str(name)
    return f"NVML error {code}"


def translate(error: pynvml.NVMLError, call: str, gpu: int | None = None, detail: str = "") -> NvmlError:
    """The port's error for a pynvml error: subclass by code, message naming call, GPU and code."""
    code = int(error.value)
    name = error_name(code)
    where = f" on GPU {gpu}" if gpu is not None else ""
    extra = f" ({detail})" if detail else ""
    cls = _ERRORS.get(code, NvmlError)
    out = cls(f"{call}{where}{extra} failed: {name} ({code})", code)
    if cls is NvmlError:
        out.nvml_name = name
    return out


@contextmanager
def _nvml(call: str, gpu: int | None = None, detail: str = "") -> Iterator[None]:
    try:
        yield
    except pynvml.NVMLError as e:
        raise translate(e, call, gpu, detail) from e


def profile_name(raw: str | bytes) -> str:
    """NVML's ``MIG 1g.10gb`` -> ``1g.10gb`` (the device plugin's and the catalog's spelling)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return text.removeprefix("MIG ").strip()


class PynvmlNvml:
    """The real NVML. ``nvmlInit`` runs once, here; ``close`` shuts NVML down."""

    def __init__(self) -> None:
        with _nvml("nvmlInit"):
            pynvml.nvmlInit()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with _nvml("nvmlShutdown"):
                pynvml.nvmlShutdown()

    def driver_version(self) -> str:
        with _nvml("nvmlSystemGetDriverVersion"):
            return str(pynvml.nvmlSystemGetDriverVersion())

    # ------------------------------------------------------------------ the Nvml port

    def gpus(self) -> list[GpuInfo]:
        with _nvml("nvmlDeviceGetCount"):
            count = int(pynvml.nvmlDeviceGetCount())
        out: list[GpuInfo] = []
        for i in range(count):
            h = self._handle(i)
            with _nvml("nvmlDeviceGetName", i):
                name = str(pynvml.nvmlDeviceGetName(h))
            with _nvml("nvmlDeviceGetUUID", i):
                uuid = str(pynvml.nvmlDeviceGetUUID(h))
            with _nvml("nvmlDeviceGetMemoryInfo", i):
                memory_mib = int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // _MIB
            current, pending = self._mig_mode(h, i)
            out.append(GpuInfo(i, uuid, name, memory_mib, current, pending))
        return out

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        h = self._mig_handle(gpu, "profiles")
        out: list[ProfileInfo] = []
        for index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, index)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue  # this GPU has no such profile
            except pynvml.NVMLError as e:
                raise translate(e, "nvmlDeviceGetGpuInstanceProfileInfo", gpu, f"profile index {index}") from e
            if info.instanceCount == 0:
                continue
            out.append(
                ProfileInfo(
                    name=profile_name(info.name),
                    nvml_profile=index,
                    profile_id=int(info.id),
                    slices=int(info.sliceCount),
                    memory_mib=int(info.memorySizeMB),
                    max_count=int(info.instanceCount),
                    placements=self._placements(h, gpu, int(info.id), int(info.instanceCount)),
                )
            )
        return out

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        h = self._mig_handle(gpu, "gpu_instances")
        uuids = self._mig_device_uuids(h, gpu)
        out: list[GpuInstanceInfo] = []
        for p in self.profiles(gpu):
            arr = (pynvml.c_nvmlGpuInstance_t * p.max_count)()
            count = ctypes.c_uint(p.max_count)
            with _nvml("nvmlDeviceGetGpuInstances", gpu, f"profile {p.name}"):
                pynvml.nvmlDeviceGetGpuInstances(h, p.profile_id, arr, ctypes.byref(count))
            out.extend(self._gi_info(gpu, arr[k], p.name, uuids) for k in range(count.value))
        return sorted(out, key=lambda gi: (gi.start, gi.gi_id))

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        h = self._mig_handle(gpu, "create_gpu_instance")
        p = self._profile(gpu, profile)
        size = next((size for s, size in p.placements if s == start), None)
        if size is None:
            starts = [s for s, _ in p.placements]
            raise NvmlInvalidArgument(
                f"GPU {gpu}: {profile} cannot be placed at slot {start} (possible starts {starts})"
            )
        placement = pynvml.c_nvmlGpuInstancePlacement_t(start, size)
        with _nvml("nvmlDeviceCreateGpuInstanceWithPlacement", gpu, f"{profile}@{start}"):
            gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, p.profile_id, ctypes.byref(placement))
        return self._gi_info(gpu, gi, profile, {})

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        h = self._mig_handle(gpu, "create_compute_instance")
        gi = self._gpu_instance(h, gpu, gi_id)
        with _nvml("nvmlGpuInstanceGetInfo", gpu, f"GPU instance {gi_id}"):
            info = pynvml.nvmlGpuInstanceGetInfo(gi)
        p = next((p for p in self.profiles(gpu) if p.profile_id == info.profileId), None)
        if p is None:
            raise NvmlNotSupported(f"GPU {gpu}: GPU instance {gi_id} has unknown profile id {info.profileId}")
        full = next((cp for cp in self._ci_profiles(gi, gpu) if cp.sliceCount == p.slices), None)
        if full is None:
            raise NvmlNotSupported(f"GPU {gpu}: no compute instance profile spans GPU instance {gi_id} ({p.name})")
        with _nvml("nvmlGpuInstanceCreateComputeInstance", gpu, f"GPU instance {gi_id}"):
            pynvml.nvmlGpuInstanceCreateComputeInstance(gi, full.id)
        return self._gi_info(gpu, gi, p.name, self._mig_device_uuids(h, gpu))

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        h = self._mig_handle(gpu, "destroy_gpu_instance")
        gi = self._gpu_instance(h, gpu, gi_id)
        for ci in self._compute_instances(gi, gpu):
            with _nvml("nvmlComputeInstanceDestroy", gpu, f"GPU instance {gi_id}"):
                pynvml.nvmlComputeInstanceDestroy(ci)
        with _nvml("nvmlGpuInstanceDestroy", gpu, f"GPU instance {gi_id}"):
            pynvml.nvmlGpuInstanceDestroy(gi)

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        """GI ids with compute processes, from the parent GPU's list and from each MIG device's
        (which of the two a driver fills for a privileged caller varies; the union is safe)."""
        h = self._mig_handle(gpu, "busy_gpu_instances")
        with _nvml("nvmlDeviceGetComputeRunningProcesses", gpu):
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        busy = {int(p.gpuInstanceId) for p in procs if int(p.gpuInstanceId) != _NOT_AVAILABLE}
        for mig, gi_id, _ in self._mig_devices(h, gpu):
            with _nvml("nvmlDeviceGetComputeRunningProcesses", gpu, f"MIG device of GPU instance {gi_id}"):
                if pynvml.nvmlDeviceGetComputeRunningProcesses(mig):
                    busy.add(gi_id)
        return busy

    # ------------------------------------------------------------------ helpers

    def _handle(self, gpu: int) -> Any:
        with _nvml("nvmlDeviceGetHandleByIndex", gpu):
            return pynvml.nvmlDeviceGetHandleByIndex(gpu)

    def _mig_mode(self, h: Any, gpu: int) -> tuple[bool, bool]:
        try:
            current, pending = pynvml.nvmlDeviceGetMigMode(h)
        except pynvml.NVMLError_NotSupported:
            return False, False  # not a MIG-capable GPU
        except pynvml.NVMLError as e:
            raise translate(e, "nvmlDeviceGetMigMode", gpu) from e
        enabled = pynvml.NVML_DEVICE_MIG_ENABLE
        return int(current) == enabled, int(pending) == enabled

    def _mig_handle(self, gpu: int, call: str) -> Any:
        h = self._handle(gpu)
        current, pending = self._mig_mode(h, gpu)
        if not current:
            later = " (enabled after the next GPU reset)" if pending else ""
            raise NvmlNotSupported(f"{call}: GPU {gpu} does not have MIG mode enabled{later}")
        return h

    def _profile(self, gpu: int, profile: str) -> ProfileInfo:
        table = self.profiles(gpu)
        p = next((p for p in table if p.name == profile), None)
        if p is None:
            names = ", ".join(p.name for p in table)
            raise NvmlInvalidArgument(f"GPU {gpu} has no GPU instance profile {profile!r} (it has {names})")
        return p

    def _placements(self, h: Any, gpu: int, profile_id: int, max_count: int) -> tuple[tuple[int, int], ...]:
        size = max(max_count, 8)
        arr = (pynvml.c_nvmlGpuInstancePlacement_t * size)()
        count = ctypes.c_uint(size)
        with _nvml("nvmlDeviceGetGpuInstancePossiblePlacements", gpu, f"profile id {profile_id}"):
            pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(count))
        return tuple(sorted((int(arr[k].start), int(arr[k].size)) for k in range(count.value)))

    def _gpu_instance(self, h: Any, gpu: int, gi_id: int) -> Any:
        with _nvml("nvmlDeviceGetGpuInstanceById", gpu, f"GPU instance {gi_id}"):
            return pynvml.nvmlDeviceGetGpuInstanceById(h, gi_id)

    def _ci_profiles(self, gi: Any, gpu: int) -> list[Any]:
        """Compute-instance profiles (shared engines) this GPU instance offers, by index order."""
        out: list[Any] = []
        for index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                cp = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi, index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                )
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            except pynvml.NVMLError as e:
                raise translate(e, "nvmlGpuInstanceGetComputeInstanceProfileInfo", gpu, f"index {index}") from e
            out.append(cp)
        return out

    def _compute_instances(self, gi: Any, gpu: int) -> list[Any]:
        out: list[Any] = []
        for cp in self._ci_profiles(gi, gpu):
            n = max(int(cp.instanceCount), 1)
            arr = (pynvml.c_nvmlComputeInstance_t * n)()
            count = ctypes.c_uint(n)
            with _nvml("nvmlGpuInstanceGetComputeInstances", gpu):
                pynvml.nvmlGpuInstanceGetComputeInstances(gi, cp.id, arr, ctypes.byref(count))
            out.extend(arr[k] for k in range(count.value))
        return out

    def _gi_info(self, gpu: int, gi: Any, profile: str, uuids: dict[tuple[int, int], str]) -> GpuInstanceInfo:
        with _nvml("nvmlGpuInstanceGetInfo", gpu):
            info = pynvml.nvmlGpuInstanceGetInfo(gi)
        gi_id = int(info.id)
        ci_ids = []
        for ci in self._compute_instances(gi, gpu):
            with _nvml("nvmlComputeInstanceGetInfo", gpu, f"GPU instance {gi_id}"):
                ci_ids.append(int(pynvml.nvmlComputeInstanceGetInfo(ci).id))
        ci_ids.sort()
        return GpuInstanceInfo(
            gpu=gpu,
            gi_id=gi_id,
            profile=profile,
            start=int(info.placement.start),
            size=int(info.placement.size),
            compute_instances=tuple(ci_ids),
            device_uuids=tuple(uuids[gi_id, c] for c in ci_ids if (gi_id, c) in uuids),
        )

    def _mig_devices(self, h: Any, gpu: int) -> list[tuple[Any, int, int]]:
        """(MIG device handle, GI id, CI id) of every MIG device of the GPU."""
        with _nvml("nvmlDeviceGetMaxMigDeviceCount", gpu):
            n = int(pynvml.nvmlDeviceGetMaxMigDeviceCount(h))
        out: list[tuple[Any, int, int]] = []
        for k in range(n):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
            except pynvml.NVMLError_NotFound:
                continue
            except pynvml.NVMLError as e:
                raise translate(e, "nvmlDeviceGetMigDeviceHandleByIndex", gpu, f"index {k}") from e
            with _nvml("nvmlDeviceGetGpuInstanceId", gpu, f"MIG device {k}"):
                gi_id = int(pynvml.nvmlDeviceGetGpuInstanceId(mig))
            with _nvml("nvmlDeviceGetComputeInstanceId", gpu, f"MIG device {k}"):
                ci_id = int(pynvml.nvmlDeviceGetComputeInstanceId(mig))
            out.append((mig, gi_id, ci_id))
        return out

    def _mig_device_uuids(self, h: Any, gpu: int) -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        for mig, gi_id, ci_id in self._mig_devices(h, gpu):
            with _nvml("nvmlDeviceGetUUID", gpu, f"MIG device of GPU instance {gi_id}"):
                out[gi_id, ci_id] = str(pynvml.nvmlDeviceGetUUID(mig))
        return out
