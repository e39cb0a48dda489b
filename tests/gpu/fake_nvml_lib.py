"""A ctypes-level stand-in for ``libnvidia-ml.so``, so the real adapter runs without a GPU.

nvidia-ml-py resolves every entry point with ``getattr(pynvml.nvmlLib, name)`` and calls it with the
real ctypes arguments (handles, ``byref(struct)``, arrays). ``FakeNvmlLib`` answers those calls by
filling the real structs, backed by a ``SimulatedNvml`` so the MIG rules are the simulator's,
including what the caller may see (``sim.caller``: capabilities, PID namespace). Only this module
touches pynvml's private names (``nvmlLib``, ``_nvmlGetFunctionPointer_cache``).

Driver behaviour the fake reproduces beyond the simulator:

* the driver's own GPU-instance profile count (``profile_count``, 0x12 as of R580; 0x0A on R535):
  indices past it answer ``INVALID_ARGUMENT``, known indices the GPU lacks ``NOT_SUPPORTED`` —
  independent of the ``NVML_GPU_INSTANCE_PROFILE_COUNT`` constant of the installed bindings;
* placements on the model's NVML grid (``nvml_grid``: RTX PRO 6000 Blackwell reports 12 units);
* entry points an older driver lacks (``missing``), which pynvml turns into FUNCTION_NOT_FOUND or,
  for its version-checked wrappers, ``NVMLLibraryMismatchError``;
* MIG device indices that answer an error instead of a device (``mig_index_errors``).

Handles are opaque pointers whose value encodes what they point to:
``kind << 40 | gpu << 24 | gi_id << 8 | ci_id``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pynvml

from nos.gpu.port import GpuInstanceInfo, NvmlError, ProfileInfo
from nos.gpu.simulated import SimProcess, SimulatedNvml

DEVICE, GPU_INSTANCE, COMPUTE_INSTANCE, MIG_DEVICE = 1, 2, 3, 4
CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6}
"""NVML_COMPUTE_INSTANCE_PROFILE_<n>_SLICE index -> slices; the CI profile id equals the index (as on
real drivers); REV1 (7) and NVL (8) variants are not offered."""
CI_PROFILE_COUNT = 9
"""The driver's compute-instance profile count (indices past it answer INVALID_ARGUMENT)."""
R580_PROFILE_COUNT = 0x12
R535_PROFILE_COUNT = 0x0A

MUTATING = frozenset(
    {
        "nvmlDeviceCreateGpuInstance",
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlGpuInstanceCreateComputeInstance",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        "nvmlComputeInstanceDestroy",
        "nvmlGpuInstanceDestroy",
        "nvmlDeviceSetMigMode",
    }
)

OK = pynvml.NVML_SUCCESS


class _Fail(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _int(x: Any) -> int:
    return int(x.value) if hasattr(x, "value") else int(x)


def _target(ref: Any) -> Any:
    """The object a ``byref(...)`` argument points to."""
    return ref._obj


def _handle_value(h: Any) -> int:
    value = ctypes.cast(h, ctypes.c_void_p).value
    if value is None:
        raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    return int(value)


def _encode(kind: int, gpu: int, gi: int = 0, ci: int = 0) -> int:
    return kind << 40 | gpu << 24 | gi << 8 | ci


def _decode(value: int) -> tuple[int, int, int, int]:
    return value >> 40, (value >> 24) & 0xFFFF, (value >> 8) & 0xFFFF, value & 0xFF


def _set_pointer(ptr: Any, value: int) -> None:
    ctypes.c_void_p.from_address(ctypes.addressof(ptr)).value = value


def _pointer(ptype: Any, value: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(value), ptype)


class FakeNvmlLib:
    """Entry points by name; each returns an NVML return code like the C library."""

    def __init__(self, sim: SimulatedNvml, *, profile_count: int = R580_PROFILE_COUNT) -> None:
        self.sim = sim
        self.calls: list[str] = []
        self.initialised = 0
        self.init_error: int | None = None
        """Return code of nvmlInitWithFlags (e.g. DRIVER_NOT_LOADED) to model a machine without NVML."""
        self.profile_count = profile_count
        self.missing: set[str] = set()
        """Entry points this driver's library does not have."""
        self.mig_index_errors: dict[int, int] = {}
        """MIG device index -> return code answered there instead of a device (the devices move up)."""
        self.placements_created: list[tuple[int, int]] = []
        """(start, size) in NVML units of every nvmlDeviceCreateGpuInstanceWithPlacement call."""

    def __getattr__(self, name: str) -> Callable[..., int]:
        impl = getattr(type(self), f"_{name}", None)
        if impl is None or name in self.missing:
            raise AttributeError(name)  # pynvml turns this into NVML_ERROR_FUNCTION_NOT_FOUND

        def entry(*args: Any) -> Any:
            self.calls.append(name)
            try:
                return impl(self, *args)
            except _Fail as f:
                return f.code
            except NvmlError as e:
                return e.code

        return entry  # a plain function: pynvml may set attributes such as ``restype`` on it

    @property
    def mutating_calls(self) -> list[str]:
        return [c for c in self.calls if c in MUTATING]

    # ------------------------------------------------------------------ lookups

    def _device(self, h: Any) -> int:
        kind, gpu, _, _ = _decode(_handle_value(h))
        if kind != DEVICE:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu

    def _grid(self, gpu: int) -> int:
        return self.sim.model(gpu).nvml_grid

    def _gi(self, h: Any) -> GpuInstanceInfo:
        kind, gpu, gi_id, _ = _decode(_handle_value(h))
        if kind != GPU_INSTANCE:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        found = next((g for g in self.sim.gpu_instances(gpu) if g.gi_id == gi_id), None)
        if found is None:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # a stale handle
        return found

    def _profile_by_id(self, gpu: int, profile_id: int) -> ProfileInfo:
        p = next((p for p in self.sim.profile_table(gpu) if p.profile_id == profile_id), None)
        if p is None:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return p

    # ------------------------------------------------------------------ system

    def _nvmlInitWithFlags(self, flags: Any) -> int:
        if self.init_error is not None:
            return self.init_error
        self.initialised += 1
        return OK

    def _nvmlShutdown(self) -> int:
        self.initialised -= 1
        return OK

    def _nvmlErrorString(self, code: Any) -> bytes:
        return f"fake NVML error {_int(code)}".encode()

    def _nvmlSystemGetDriverVersion(self, buf: Any, size: Any) -> int:
        buf.value = self.sim.driver_version.encode()
        return OK

    # ------------------------------------------------------------------ devices

    def _nvmlDeviceGetCount_v2(self, count: Any) -> int:
        _target(count).value = len(self.sim.gpus())
        return OK

    def _nvmlDeviceGetHandleByIndex_v2(self, index: Any, device: Any) -> int:
        i = _int(index)
        if not 0 <= i < len(self.sim.gpus()):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        _set_pointer(_target(device), _encode(DEVICE, i))
        return OK

    def _nvmlDeviceGetName(self, h: Any, buf: Any, size: Any) -> int:
        buf.value = self.sim.gpus()[self._device(h)].name.encode()
        return OK

    def _nvmlDeviceGetUUID(self, h: Any, buf: Any, size: Any) -> int:
        kind, gpu, gi_id, ci_id = _decode(_handle_value(h))
        if kind == DEVICE:
            buf.value = self.sim.gpus()[gpu].uuid.encode()
            return OK
        if kind != MIG_DEVICE:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        uuid = next((u for g, c, u in self.sim.mig_devices(gpu) if (g, c) == (gi_id, ci_id)), None)
        if uuid is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        buf.value = uuid.encode()
        return OK

    def _nvmlDeviceGetMemoryInfo(self, h: Any, mem: Any) -> int:
        total = self.sim.total_memory_mib(self._device(h)) * 1024 * 1024
        m = _target(mem)
        m.total, m.free, m.used = total, total, 0
        return OK

    def _nvmlDeviceGetMigMode(self, h: Any, current: Any, pending: Any) -> int:
        g = self.sim.gpus()[self._device(h)]
        _target(current).value = int(g.mig_enabled)
        _target(pending).value = int(g.mig_pending)
        return OK

    # ------------------------------------------------------------------ GPU instances

    def _nvmlDeviceGetGpuInstanceProfileInfoV(self, h: Any, index: Any, info: Any) -> int:
        gpu = self._device(h)
        out = _target(info)
        if out.version != pynvml.nvmlGpuInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        idx = _int(index)
        if not 0 <= idx < self.profile_count:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        p = next((p for p in self.sim.profile_table(gpu) if p.nvml_profile == idx), None)
        if p is None:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        out.id, out.sliceCount, out.instanceCount = p.profile_id, p.slices, p.max_count
        out.isP2pSupported, out.multiprocessorCount = 0, 14 * p.slices
        out.copyEngineCount = p.slices
        media = int("+me" in p.name)
        out.decoderCount, out.encoderCount, out.jpegCount, out.ofaCount = p.slices, 0, media, media
        out.memorySizeMB = p.memory_mib
        out.name = f"MIG {p.name}".encode()
        return OK

    def _nvmlDeviceGetGpuInstancePossiblePlacements_v2(self, h: Any, profile_id: Any, arr: Any, count: Any) -> int:
        gpu = self._device(h)
        self.sim.require(gpu, "read", "nvmlDeviceGetGpuInstancePossiblePlacements")
        p = self._profile_by_id(gpu, _int(profile_id))
        grid = self._grid(gpu)
        n = _target(count)
        if arr is None:
            n.value = len(p.placements)
            return OK
        if n.value < len(p.placements):
            n.value = len(p.placements)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for k, (start, size) in enumerate(p.placements):
            arr[k].start, arr[k].size = start * grid, size * grid
        n.value = len(p.placements)
        return OK

    def _nvmlDeviceCreateGpuInstanceWithPlacement(self, h: Any, profile_id: Any, placement: Any, gi: Any) -> int:
        gpu = self._device(h)
        p = self._profile_by_id(gpu, _int(profile_id))
        grid = self._grid(gpu)
        pl = _target(placement) if hasattr(placement, "_obj") else placement.contents
        self.placements_created.append((int(pl.start), int(pl.size)))
        if pl.size != p.placements[0][1] * grid or pl.start % grid:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        created = self.sim.create_gpu_instance(gpu, p.name, int(pl.start) // grid)
        _set_pointer(_target(gi), _encode(GPU_INSTANCE, gpu, created.gi_id))
        return OK

    def _nvmlDeviceGetGpuInstances(self, h: Any, profile_id: Any, arr: Any, count: Any) -> int:
        gpu = self._device(h)
        p = self._profile_by_id(gpu, _int(profile_id))
        found = [g for g in self.sim.gpu_instances(gpu) if g.profile == p.name]
        n = _target(count)
        if arr is None or len(arr) < len(found):
            n.value = len(found)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for k, g in enumerate(found):
            arr[k] = _pointer(pynvml.c_nvmlGpuInstance_t, _encode(GPU_INSTANCE, gpu, g.gi_id))
        n.value = len(found)
        return OK

    def _nvmlDeviceGetGpuInstanceById(self, h: Any, gi_id: Any, gi: Any) -> int:
        gpu = self._device(h)
        wanted = _int(gi_id)
        if not any(g.gi_id == wanted for g in self.sim.gpu_instances(gpu)):
            return pynvml.NVML_ERROR_NOT_FOUND
        _set_pointer(_target(gi), _encode(GPU_INSTANCE, gpu, wanted))
        return OK

    def _nvmlGpuInstanceGetInfo(self, gi: Any, info: Any) -> int:
        g = self._gi(gi)
        grid = self._grid(g.gpu)
        out = _target(info)
        out.device = _pointer(pynvml.c_nvmlDevice_t, _encode(DEVICE, g.gpu))
        out.id = g.gi_id
        out.profileId = next(p.profile_id for p in self.sim.profile_table(g.gpu) if p.name == g.profile)
        out.placement.start, out.placement.size = g.start * grid, g.size * grid
        return OK

    def _nvmlGpuInstanceDestroy(self, gi: Any) -> int:
        g = self._gi(gi)
        if g.compute_instances:
            return pynvml.NVML_ERROR_IN_USE  # NVML refuses while compute instances exist
        self.sim.destroy_gpu_instance(g.gpu, g.gi_id)
        return OK

    # ------------------------------------------------------------------ compute instances

    def _gi_slices(self, g: GpuInstanceInfo) -> int:
        return next(p.slices for p in self.sim.profile_table(g.gpu) if p.name == g.profile)

    def _ci_profile(self, g: GpuInstanceInfo, profile_id: int) -> int:
        """Slices of a CI profile offered in this GI; INVALID_ARGUMENT past the driver's count."""
        if not 0 <= profile_id < CI_PROFILE_COUNT:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        slices = CI_SLICES.get(profile_id)
        sizes = {p.slices for p in self.sim.profile_table(g.gpu)}
        if slices is None or slices > self._gi_slices(g) or slices not in sizes:
            raise _Fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return slices

    def _nvmlGpuInstanceGetComputeInstanceProfileInfoV(self, gi: Any, index: Any, engine: Any, info: Any) -> int:
        g = self._gi(gi)
        if _int(engine) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        out = _target(info)
        if out.version != pynvml.nvmlComputeInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        idx = _int(index)
        slices = self._ci_profile(g, idx)
        out.id, out.sliceCount = idx, slices
        out.instanceCount = self._gi_slices(g) // slices
        out.multiprocessorCount = 14 * slices
        out.name = f"MIG {slices}c.{g.profile}".encode()
        return OK

    def _nvmlGpuInstanceCreateComputeInstance(self, gi: Any, profile_id: Any, ci: Any) -> int:
        g = self._gi(gi)
        if self._ci_profile(g, _int(profile_id)) != self._gi_slices(g):
            return pynvml.NVML_ERROR_NOT_SUPPORTED  # the simulator creates only the spanning compute instance
        done = self.sim.create_compute_instance(g.gpu, g.gi_id)
        _set_pointer(_target(ci), _encode(COMPUTE_INSTANCE, g.gpu, g.gi_id, done.compute_instances[0]))
        return OK

    def _nvmlGpuInstanceGetComputeInstances(self, gi: Any, profile_id: Any, arr: Any, count: Any) -> int:
        g = self._gi(gi)
        slices = self._ci_profile(g, _int(profile_id))
        found = [ci for ci, s, _ in self.sim.compute_instances(g.gpu, g.gi_id) if s == slices]
        n = _target(count)
        if len(arr) < len(found):
            n.value = len(found)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for k, ci_id in enumerate(found):
            arr[k] = _pointer(pynvml.c_nvmlComputeInstance_t, _encode(COMPUTE_INSTANCE, g.gpu, g.gi_id, ci_id))
        n.value = len(found)
        return OK

    def _ci(self, ci: Any) -> tuple[GpuInstanceInfo, int, int]:
        kind, gpu, gi_id, ci_id = _decode(_handle_value(ci))
        g = next((g for g in self.sim.gpu_instances(gpu) if g.gi_id == gi_id), None)
        if kind != COMPUTE_INSTANCE or g is None:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        slices = next((s for c, s, _ in self.sim.compute_instances(gpu, gi_id) if c == ci_id), None)
        if slices is None:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return g, ci_id, slices

    def _nvmlComputeInstanceGetInfo_v2(self, ci: Any, info: Any) -> int:
        g, ci_id, slices = self._ci(ci)
        out = _target(info)
        out.device = _pointer(pynvml.c_nvmlDevice_t, _encode(DEVICE, g.gpu))
        out.gpuInstance = _pointer(pynvml.c_nvmlGpuInstance_t, _encode(GPU_INSTANCE, g.gpu, g.gi_id))
        out.id, out.profileId = ci_id, next(k for k, s in CI_SLICES.items() if s == slices)
        out.placement.start, out.placement.size = 0, slices
        return OK

    def _nvmlComputeInstanceDestroy(self, ci: Any) -> int:
        g, ci_id, _ = self._ci(ci)
        self.sim.destroy_compute_instance(g.gpu, g.gi_id, ci_id)
        return OK

    # ------------------------------------------------------------------ MIG devices and processes

    def _nvmlDeviceGetMaxMigDeviceCount(self, h: Any, count: Any) -> int:
        _target(count).value = self.sim.model(self._device(h)).compute_slices
        return OK

    def _nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, index: Any, mig: Any) -> int:
        gpu = self._device(h)
        k = _int(index)
        if k in self.mig_index_errors:
            return self.mig_index_errors[k]
        devices = self.sim.mig_devices(gpu)
        j = k - sum(1 for e in self.mig_index_errors if e < k)
        if not 0 <= j < len(devices):
            return pynvml.NVML_ERROR_NOT_FOUND
        gi_id, ci_id, _ = devices[j]
        _set_pointer(_target(mig), _encode(MIG_DEVICE, gpu, gi_id, ci_id))
        return OK

    def _mig_ids(self, h: Any) -> tuple[int, int]:
        kind, _, gi_id, ci_id = _decode(_handle_value(h))
        if kind != MIG_DEVICE:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gi_id, ci_id

    def _nvmlDeviceGetGpuInstanceId(self, h: Any, out: Any) -> int:
        _target(out).value = self._mig_ids(h)[0]
        return OK

    def _nvmlDeviceGetComputeInstanceId(self, h: Any, out: Any) -> int:
        _target(out).value = self._mig_ids(h)[1]
        return OK

    def _processes(self, h: Any) -> list[SimProcess]:
        kind, gpu, gi_id, ci_id = _decode(_handle_value(h))
        if kind == MIG_DEVICE:
            return [p for p in self.sim.visible_processes(gpu, gi_id) if p.ci_id == ci_id]
        if kind != DEVICE:
            raise _Fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.sim.visible_processes(gpu)

    def _fill_processes(self, h: Any, count: Any, arr: Any) -> int:
        procs = self._processes(h)
        n = _target(count)
        if arr is None or n.value < len(procs):
            n.value = len(procs)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE if procs else OK
        for k, p in enumerate(procs):
            arr[k].pid, arr[k].usedGpuMemory = p.pid, 1 << 30
            arr[k].gpuInstanceId, arr[k].computeInstanceId = p.gi_id, p.ci_id
        n.value = len(procs)
        return OK

    def _nvmlDeviceGetComputeRunningProcesses_v3(self, h: Any, count: Any, arr: Any) -> int:
        return self._fill_processes(h, count, arr)

    def _nvmlDeviceGetComputeRunningProcesses_v2(self, h: Any, count: Any, arr: Any) -> int:
        return self._fill_processes(h, count, arr)  # v2 has the same fields the adapter reads


@contextmanager
def installed(lib: FakeNvmlLib) -> Iterator[FakeNvmlLib]:
    """Make pynvml talk to ``lib`` instead of libnvidia-ml.so for the duration."""
    saved_lib = pynvml.nvmlLib
    saved_cache = dict(pynvml._nvmlGetFunctionPointer_cache)
    pynvml.nvmlLib = lib
    pynvml._nvmlGetFunctionPointer_cache.clear()
    try:
        yield lib
    finally:
        pynvml.nvmlLib = saved_lib
        pynvml._nvmlGetFunctionPointer_cache.clear()
        pynvml._nvmlGetFunctionPointer_cache.update(saved_cache)
