"""The NVML surface the MIG agent uses, as a small interface with two implementations:
``nos.gpu.nvml`` (real hardware through nvidia-ml-py) and ``nos.gpu.simulated`` (MIG physics in
Python, for tests, ``nos agent --backend simulated:FILE`` and ``nos simulate``).

Calls are blocking and not thread-safe; callers serialise them (one apply at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class NvmlError(Exception):
    """An NVML call failed. ``code`` is the NVML return code (e.g. 19 NVML_ERROR_IN_USE)."""

    code: int = 999
    nvml_name: str = "NVML_ERROR_UNKNOWN"

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NvmlNotSupported(NvmlError):
    code, nvml_name = 3, "NVML_ERROR_NOT_SUPPORTED"


class NvmlNoPermission(NvmlError):
    code, nvml_name = 4, "NVML_ERROR_NO_PERMISSION"


class NvmlInvalidArgument(NvmlError):
    code, nvml_name = 2, "NVML_ERROR_INVALID_ARGUMENT"


class NvmlNotFound(NvmlError):
    code, nvml_name = 6, "NVML_ERROR_NOT_FOUND"


class NvmlFunctionNotFound(NvmlError):
    """The driver's libnvidia-ml lacks an entry point the bindings call (an older driver than the
    bindings; pynvml's ``NVMLLibraryMismatchError`` is mapped here too)."""

    code, nvml_name = 13, "NVML_ERROR_FUNCTION_NOT_FOUND"


class NvmlInUse(NvmlError):
    code, nvml_name = 19, "NVML_ERROR_IN_USE"


class NvmlInsufficientResources(NvmlError):
    code, nvml_name = 23, "NVML_ERROR_INSUFFICIENT_RESOURCES"


class NvmlTimeout(NvmlError):
    """A call did not return within the agent's deadline (NVML itself has none)."""

    code, nvml_name = 10, "NVML_ERROR_TIMEOUT"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    """Product name as NVML reports it, e.g. ``NVIDIA A100-SXM4-80GB`` (the label has ``-`` for spaces)."""
    mig_enabled: bool
    mig_pending: bool
    """MIG mode after the next GPU reset; differs from ``mig_enabled`` while a change is pending."""


@dataclass(frozen=True)
class ProfileInfo:
    """One GPU-instance profile as the driver reports it."""

    name: str
    """Without NVML's ``MIG `` prefix, e.g. ``1g.10gb`` or ``1g.10gb+me``."""
    nvml_profile: int
    """The NVML_GPU_INSTANCE_PROFILE_* index passed to nvmlDeviceGetGpuInstanceProfileInfo."""
    profile_id: int
    """The driver's id for create calls (e.g. 19 for 1g.10gb on an A100-80GB)."""
    slices: int
    memory_mib: int
    max_count: int
    placements: tuple[tuple[int, int], ...]
    """Possible placements as (start, size) in catalog memory slots (NVML's units divided by the
    model's ``nvml_grid``)."""


@dataclass(frozen=True)
class GpuInstanceInfo:
    gpu: int
    gi_id: int
    profile: str
    start: int
    size: int
    compute_instances: tuple[int, ...]
    """Ids of its compute instances; empty for a half-created instance."""
    device_uuids: tuple[str, ...]
    """MIG device UUIDs (one per compute instance), as the device plugin advertises them."""
    split: bool = False
    """Its compute instances are not the one compute instance spanning it that nos creates (several,
    or a smaller one, e.g. made with ``nvidia-smi mig -cci``): the device plugin advertises those as
    ``<n>c.<profile>`` devices, so nos never reuses or completes such an instance."""


class Nvml(Protocol):
    def gpus(self) -> list[GpuInfo]: ...

    def profiles(self, gpu: int) -> list[ProfileInfo]: ...

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]: ...

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        """Create a GPU instance at exactly ``start`` (no compute instance yet)."""
        ...

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        """Create the default compute instance spanning the whole GPU instance."""
        ...

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        """Destroy the instance's compute instances, then the instance."""
        ...

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        """GPU instance ids with running processes (a safety net beside PodResources)."""
        ...
