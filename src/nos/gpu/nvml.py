"""``PynvmlNvml``: the ``Nvml`` port on real GPUs through nvidia-ml-py (``import pynvml``).

A thin adapter: every MIG rule is the driver's, and every exception pynvml raises (each
``NVMLError``, and ``NVMLLibraryMismatchError`` for an entry point the driver lacks) becomes the
port's ``NvmlError`` subclass for its code, with the call and the GPU in the message (the agent logs
and reports these as they are). Creation always names the placement
(``nvmlDeviceCreateGpuInstanceWithPlacement``): the planner chose it, NVML must not pick another.

What is asked of the driver, and how (docs/nvml.md has the sources):

* profiles are enumerated by index as NVML's header says: from 0 until ``INVALID_ARGUMENT``, not up
  to the bindings' ``NVML_GPU_INSTANCE_PROFILE_COUNT`` (0x0A in nvidia-ml-py 12.535, 0x12 in 13.x),
  so a driver newer than the bindings still shows every profile; indices the bindings know are
  skipped on ``NOT_SUPPORTED``/``INVALID_ARGUMENT`` like go-nvlib does. Profile ids come from the
  driver, never from a table;
* placements are translated by the catalog model's ``nvml_grid`` both ways (RTX PRO 6000 Blackwell
  reports a 12-unit grid over its 4 slots);
* only what the agent uses is read: no parent-GPU memory query (denied without the MIG monitor
  capability while MIG is on);
* MIG device enumeration skips ``NOT_FOUND`` and ``INVALID_ARGUMENT`` indices (as go-nvlib).

Handles are looked up per call (cheap) rather than cached: a GPU reset invalidates them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pynvml

from nos.gpu.port import (
    GpuInfo,
    GpuInstanceInfo,
    NvmlError,
    NvmlFunctionNotFound,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNoPermission,
    NvmlNotFound,
    NvmlNotSupported,
    ProfileInfo,
)
from nos.mig.catalog import Catalog, default_catalog

_ERRORS: dict[int, type[NvmlError]] = {
    c.code: c
    for c in (
        NvmlInvalidArgument,
        NvmlNotSupported,
        NvmlNoPermission,
        NvmlNotFound,
        NvmlFunctionNotFound,
        NvmlInUse,
        NvmlInsufficientResources,
    )
}
_NOT_AVAILABLE = 0xFFFFFFFF
"""gpuInstanceId of a process outside any MIG device."""
_MAX_PROFILE_INDEX = 64
"""Safety bound of the enumeration (NVML defines 0x12 GPU-instance profiles as of R580)."""


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
    except pynvml.NVMLLibraryMismatchError as e:  # not an NVMLError: the driver lacks the entry point
        where = f" on GPU {gpu}" if gpu is not None else ""
        raise NvmlFunctionNotFound(
            f"{call}{where} failed: the driver's NVML library lacks the entry point nvidia-ml-py calls "
            f"(NVML_ERROR_FUNCTION_NOT_FOUND; driver older than the bindings)"
        ) from e


def profile_name(raw: str | bytes) -> str:
    """NVML's ``MIG 1g.10gb`` -> ``1g.10gb`` (the device plugin's and the catalog's spelling)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return text.removeprefix("MIG ").strip()


def enumerate_profiles(get: Callable[[int], Any], known: int, call: str, gpu: int) -> list[tuple[int, Any]]:
    """(index, info) of every profile ``get(index)`` answers, by NVML's rule: indices from 0 until
    ``INVALID_ARGUMENT``; ``NOT_SUPPORTED`` (and, below ``known``, the bindings' count,
    ``INVALID_ARGUMENT`` too) only skips the index."""
    out: list[tuple[int, Any]] = []
    for index in range(_MAX_PROFILE_INDEX):
        try:
            with _nvml(call, gpu, f"profile index {index}"):
                info = get(index)
        except NvmlNotSupported:
            continue
        except NvmlInvalidArgument:
            if index < known:
                continue
            break
        out.append((index, info))
    return out


class PynvmlNvml:
    """The real NVML. ``nvmlInit`` runs once, here; ``close`` shuts NVML down."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        with _nvml("nvmlInit"):
            pynvml.nvmlInit()
        self._closed = False
        self._catalog = catalog or default_catalog()
        self._grids: dict[int, int] = {}

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
            name = self._name(h, i)
            with _nvml("nvmlDeviceGetUUID", i):
                uuid = str(pynvml.nvmlDeviceGetUUID(h))
            current, pending = self._mig_mode(h, i)
            out.append(GpuInfo(i, uuid, name, current, pending))
        return out

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        h = self._mig_handle(gpu, "profiles")
        return self._profile_table(h, gpu, placements=True)

    def _profile_table(self, h: Any, gpu: int, placements: bool) -> list[ProfileInfo]:
        """The driver's profiles; their placements only when asked (one query per profile)."""
        grid = self._grid(h, gpu)
        out: list[ProfileInfo] = []
        infos = enumerate_profiles(
            lambda index: pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, index),
            int(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT),
            "nvmlDeviceGetGpuInstanceProfileInfo",
            gpu,
        )
        for index, info in infos:
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
                    placements=self._placements(h, gpu, int(info.id), grid) if placements else (),
                )
            )
        return out

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        h = self._mig_handle(gpu, "gpu_instances")
        uuids = self._mig_device_uuids(h, gpu)
        grid = self._grid(h, gpu)
        out: list[GpuInstanceInfo] = []
        for p in self._profile_table(h, gpu, placements=False):
            n = max(p.max_count, 1)
            arr = (pynvml.c_nvmlGpuInstance_t * n)()
            count = ctypes.c_uint(n)
            with _nvml("nvmlDeviceGetGpuInstances", gpu, f"profile {p.name}"):
                pynvml.nvmlDeviceGetGpuInstances(h, p.profile_id, arr, ctypes.byref(count))
            out.extend(self._gi_info(gpu, arr[k], p, uuids, grid) for k in range(count.value))
        return sorted(out, key=lambda gi: (gi.start, gi.gi_id))

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        h = self._mig_handle(gpu, "create_gpu_instance")
        grid = self._grid(h, gpu)
        p = self._profile(gpu, profile)
        size = next((size for s, size in p.placements if s == start), None)
        if size is None:
            starts = [s for s, _ in p.placements]
            raise NvmlInvalidArgument(
                f"GPU {gpu}: {profile} cannot be placed at slot {start} (possible starts {starts})"
            )
        placement = pynvml.c_nvmlGpuInstancePlacement_t(start * grid, size * grid)
        with _nvml("nvmlDeviceCreateGpuInstanceWithPlacement", gpu, f"{profile}@{start}"):
            gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, p.profile_id, ctypes.byref(placement))
        return self._gi_info(gpu, gi, p, {}, grid)

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        h = self._mig_handle(gpu, "create_compute_instance")
        gi = self._gpu_instance(h, gpu, gi_id)
        with _nvml("nvmlGpuInstanceGetInfo", gpu, f"GPU instance {gi_id}"):
            info = pynvml.nvmlGpuInstanceGetInfo(gi)
        p = next((p for p in self._profile_table(h, gpu, False) if p.profile_id == info.profileId), None)
        if p is None:
            raise NvmlNotSupported(f"GPU {gpu}: GPU instance {gi_id} has unknown profile id {info.profileId}")
        full = next((cp for cp in self._ci_profiles(gi, gpu) if cp.sliceCount == p.slices), None)
        if full is None:
            raise NvmlNotSupported(f"GPU {gpu}: no compute instance profile spans GPU instance {gi_id} ({p.name})")
        with _nvml("nvmlGpuInstanceCreateComputeInstance", gpu, f"GPU instance {gi_id}"):
            pynvml.nvmlGpuInstanceCreateComputeInstance(gi, full.id)
        return self._gi_info(gpu, gi, p, self._mig_device_uuids(h, gpu), self._grid(h, gpu))

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        h = self._mig_handle(gpu, "destroy_gpu_instance")
        gi = self._gpu_instance(h, gpu, gi_id)
        for ci, _ in self._compute_instances(gi, gpu):
            with _nvml("nvmlComputeInstanceDestroy", gpu, f"GPU instance {gi_id}"):
                pynvml.nvmlComputeInstanceDestroy(ci)
        with _nvml("nvmlGpuInstanceDestroy", gpu, f"GPU instance {gi_id}"):
            pynvml.nvmlGpuInstanceDestroy(gi)

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        """GI ids with compute processes, from the parent GPU's list and from each MIG device's
        (which of the two a driver fills for a privileged caller varies; the union is safe). Needs
        the MIG monitor capability (``NvmlNoPermission`` without), and lists only processes in the
        caller's PID namespace (all of them with ``hostPID``)."""
        h = self._mig_handle(gpu, "busy_gpu_instances")
        procs = self._processes(h, gpu, "")
        busy = {int(p.gpuInstanceId) for p in procs if int(p.gpuInstanceId) != _NOT_AVAILABLE}
        for mig, gi_id, _ in self._mig_devices(h, gpu):
            if self._processes(mig, gpu, f"MIG device of GPU instance {gi_id}"):
                busy.add(gi_id)
        return busy

    # ------------------------------------------------------------------ helpers

    def _handle(self, gpu: int) -> Any:
        with _nvml("nvmlDeviceGetHandleByIndex", gpu):
            return pynvml.nvmlDeviceGetHandleByIndex(gpu)

    def _name(self, h: Any, gpu: int) -> str:
        with _nvml("nvmlDeviceGetName", gpu):
            return str(pynvml.nvmlDeviceGetName(h))

    def _grid(self, h: Any, gpu: int) -> int:
        """NVML placement units per catalog slot for this GPU's model (1 when the catalog does not know it)."""
        if gpu not in self._grids:
            model = self._catalog.model_for_product(self._name(h, gpu).replace(" ", "-"))
            self._grids[gpu] = model.nvml_grid if model is not None else 1
        return self._grids[gpu]

    def _processes(self, h: Any, gpu: int, detail: str) -> list[Any]:
        """nvmlDeviceGetComputeRunningProcesses (v3), or v2 on a driver without the v3 entry point."""
        try:
            with _nvml("nvmlDeviceGetComputeRunningProcesses", gpu, detail):
                return list(pynvml.nvmlDeviceGetComputeRunningProcesses(h))
        except NvmlFunctionNotFound:
            with _nvml("nvmlDeviceGetComputeRunningProcesses_v2", gpu, detail):
                return list(pynvml.nvmlDeviceGetComputeRunningProcesses_v2(h))

    def _mig_mode(self, h: Any, gpu: int) -> tuple[bool, bool]:
        try:
            with _nvml("nvmlDeviceGetMigMode", gpu):
                current, pending = pynvml.nvmlDeviceGetMigMode(h)
        except NvmlNotSupported:
            return False, False  # not a MIG-capable GPU
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

    @staticmethod
    def _slots(gpu: int, what: str, start: int, size: int, grid: int) -> tuple[int, int]:
        """NVML's (start, size) in catalog slots; a placement off the catalog's grid is an error."""
        if start % grid or size % grid:
            raise NvmlError(f"GPU {gpu}: {what} placement {start}:{size} is not on the catalog's grid of {grid}")
        return start // grid, size // grid

    def _placements(self, h: Any, gpu: int, profile_id: int, grid: int) -> tuple[tuple[int, int], ...]:
        size = 32
        arr = (pynvml.c_nvmlGpuInstancePlacement_t * size)()
        count = ctypes.c_uint(size)
        with _nvml("nvmlDeviceGetGpuInstancePossiblePlacements", gpu, f"profile id {profile_id}"):
            pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(count))
        what = f"profile id {profile_id}"
        return tuple(
            sorted(self._slots(gpu, what, int(arr[k].start), int(arr[k].size), grid) for k in range(count.value))
        )

    def _gpu_instance(self, h: Any, gpu: int, gi_id: int) -> Any:
        with _nvml("nvmlDeviceGetGpuInstanceById", gpu, f"GPU instance {gi_id}"):
            return pynvml.nvmlDeviceGetGpuInstanceById(h, gi_id)

    def _ci_profiles(self, gi: Any, gpu: int) -> list[Any]:
        """Compute-instance profiles (shared engines) this GPU instance offers, by index order."""
        infos = enumerate_profiles(
            lambda index: pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            ),
            int(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT),
            "nvmlGpuInstanceGetComputeInstanceProfileInfo",
            gpu,
        )
        return [cp for _, cp in infos]

    def _compute_instances(self, gi: Any, gpu: int) -> list[tuple[Any, int]]:
        """(handle, compute slices) of every compute instance of the GPU instance."""
        out: list[tuple[Any, int]] = []
        for cp in self._ci_profiles(gi, gpu):
            n = max(int(cp.instanceCount), 1)
            arr = (pynvml.c_nvmlComputeInstance_t * n)()
            count = ctypes.c_uint(n)
            with _nvml("nvmlGpuInstanceGetComputeInstances", gpu):
                pynvml.nvmlGpuInstanceGetComputeInstances(gi, cp.id, arr, ctypes.byref(count))
            out.extend((arr[k], int(cp.sliceCount)) for k in range(count.value))
        return out

    def _gi_info(
        self, gpu: int, gi: Any, p: ProfileInfo, uuids: dict[tuple[int, int], str], grid: int
    ) -> GpuInstanceInfo:
        with _nvml("nvmlGpuInstanceGetInfo", gpu):
            info = pynvml.nvmlGpuInstanceGetInfo(gi)
        gi_id = int(info.id)
        cis: list[tuple[int, int]] = []
        for ci, slices in self._compute_instances(gi, gpu):
            with _nvml("nvmlComputeInstanceGetInfo", gpu, f"GPU instance {gi_id}"):
                cis.append((int(pynvml.nvmlComputeInstanceGetInfo(ci).id), slices))
        cis.sort()
        pl = info.placement
        start, size = self._slots(gpu, f"GPU instance {gi_id}", int(pl.start), int(pl.size), grid)
        return GpuInstanceInfo(
            gpu=gpu,
            gi_id=gi_id,
            profile=p.name,
            start=start,
            size=size,
            compute_instances=tuple(c for c, _ in cis),
            device_uuids=tuple(uuids[gi_id, c] for c, _ in cis if (gi_id, c) in uuids),
            split=bool(cis) and [s for _, s in cis] != [p.slices],
        )

    def _mig_devices(self, h: Any, gpu: int) -> list[tuple[Any, int, int]]:
        """(MIG device handle, GI id, CI id) of every MIG device of the GPU; indices without one
        answer NOT_FOUND or INVALID_ARGUMENT and are skipped (go-nvlib does the same)."""
        with _nvml("nvmlDeviceGetMaxMigDeviceCount", gpu):
            n = int(pynvml.nvmlDeviceGetMaxMigDeviceCount(h))
        out: list[tuple[Any, int, int]] = []
        for k in range(n):
            try:
                with _nvml("nvmlDeviceGetMigDeviceHandleByIndex", gpu, f"index {k}"):
                    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
            except (NvmlNotFound, NvmlInvalidArgument):
                continue
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
