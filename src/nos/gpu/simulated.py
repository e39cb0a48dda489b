"""``SimulatedNvml``: the ``Nvml`` port with NVML's MIG rules in Python, built from the catalog.

Used by agent tests, ``nos simulate`` and ``nos agent --backend simulated:FILE``; also the engine
behind the ctypes-level fake library that tests the real adapter, so both see the same physics:

* creation at a placement fails with ``NvmlInvalidArgument`` for an unknown profile or a start the
  profile does not allow, and with ``NvmlInsufficientResources`` when it would overlap, exceed the
  profile's maximum count, the compute slices or the single set of media engines;
* MIG calls on a GPU whose MIG mode is not enabled raise ``NvmlNotSupported``;
* a GPU instance's id is the driver's memory-partition ("swizzle") id of its placement: 0 for the
  whole GPU, 1-2 for halves, 3-6 for quarters, 7-14 for eighths on an 8-slot GPU (e.g. A100: 3g ->
  1-2, 2g -> 3-5, 1g -> 7-13). So an instance destroyed and re-created at the same place gets the
  same id again, exactly as on real drivers;
* a GPU instance has zero compute instances (half-created), the one spanning it that nos creates,
  or several smaller ones (``add_compute_instance``, as ``nvidia-smi mig -cci`` makes them); each
  compute instance is a MIG device with its own UUID;
* destroying an instance with running processes raises ``NvmlInUse``;
* what the caller may see depends on ``caller`` (a ``Caller``), as the driver decides it: without
  the MIG config or monitor capability the placement and instance queries are denied
  (``NvmlNoPermission``), without the config capability create/destroy are, without the monitor
  capability the process query is; processes outside the caller's PID namespace are not listed
  (unless the caller runs in the host's, ``hostPID``);
* every rejected call leaves the state unchanged.

Tests inject failures with ``fail_next`` and model ``kill -9`` between the two halves of a create
with ``crash_after_gpu_instance``; ``to_dict``/``from_dict`` (and ``save``/``load``) carry the whole
state, so a "restarted" process sees exactly what the dead one left.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from nos.gpu.simulated_file import NodeFile, SimulatedNodeError, parse_node, read_node_file, write_node_file
from nos.mig.catalog import Catalog, GpuModel, Profile, default_catalog
from nos.mig.layout import Instance, layout_errors

PROFILE_IDS: dict[int, int] = {
    **{0: 19, 7: 20, 9: 15, 1: 14, 2: 9, 3: 5, 4: 0, 8: 6},
    **{0x0A: 47, 0x0B: 48, 0x0C: 49, 0x0D: 50, 0x0E: 51, 0x0F: 32, 0x10: 33, 0x11: 52},
}
"""NVML_GPU_INSTANCE_PROFILE_* index -> driver profile id. Indices 0-9 as an A100-80GB driver reports
them (the 2-slice ``+me`` id 6 is A30's); the Blackwell variants (``+gfx`` 0x0A-0x0C and 0x11,
``-me`` 0x0D-0x0E, ``+me.all`` 0x0F-0x10) get made-up ids. Deliberately not the index: code that
confuses the two fails."""

CI_ID = 0
"""Id of the compute instance spanning its GPU instance; the driver numbers CIs per GI from 0."""


@dataclass(frozen=True)
class Caller:
    """What the calling process may do, as the driver decides it (docs/nvml.md, "Privileges").

    The default is root on the host: everything allowed and visible."""

    config: bool = True
    """The MIG config capability (/proc/driver/nvidia/capabilities/mig/config): create and destroy,
    read placements and instances. In a container: ``NVIDIA_MIG_CONFIG_DEVICES=all`` + CAP_SYS_ADMIN."""
    monitor: bool = True
    """The MIG monitor capability (.../mig/monitor): read placements and instances, and the parent
    GPU's aggregate memory and process lists. In a container: ``NVIDIA_MIG_MONITOR_DEVICES=all``."""
    pid_namespace: str = "host"
    """The caller's PID namespace; ``host`` (``hostPID: true``) sees every process, any other only
    the processes of its own namespace."""

    def sees(self, process: SimProcess) -> bool:
        return self.pid_namespace == "host" or process.pid_namespace == self.pid_namespace


def swizzle_id(model: GpuModel, slots: int, start: int) -> int:
    """The GPU instance id the driver gives an instance of ``slots`` memory slots at ``start``: the
    id of its memory partition in the binary tree over the slots (whole GPU 0, halves 1-2, quarters
    3-6, eighths 7-14 on an 8-slot GPU). The kernel driver reports ``swizzId`` as the GI id
    (open-gpu-kernel-modules, gpuFindClientInfoWithPidIterator)."""
    return model.memory_slots // slots - 1 + start // slots


NVML_NAMES: dict[str, str] = {
    "A100-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "H100-80GB": "NVIDIA H100 80GB HBM3",
    "H800-80GB": "NVIDIA H800",
    "A800-80GB": "NVIDIA A800-SXM4-80GB",
    "A800-40GB": "NVIDIA A800-SXM4-40GB",
    "H800-NVL-94GB": "NVIDIA H800 NVL",
    "H20-3e-141GB": "NVIDIA H20-3e",
    "GB200-186GB": "NVIDIA GB200",
    "GB300-278GB": "NVIDIA GB300",
    "H100-NVL-94GB": "NVIDIA H100 NVL",
    "H100-96GB": "NVIDIA H100 96GB HBM3",
    "H200-141GB": "NVIDIA H200",
    "GH200-144GB": "NVIDIA GH200 144G HBM3e",
    "B200-180GB": "NVIDIA B200",
    "B300-288GB": "NVIDIA B300 SXM6 AC",
    "A30-24GB": "NVIDIA A30",
    "RTX-PRO-6000-96GB": "NVIDIA RTX PRO 6000 Blackwell Server Edition",
}
"""Product name NVML reports for each catalog model (spaces, unlike the ``gpu.product`` label)."""

_UUID_NS = uuidlib.UUID("6f1d6c2e-3b0a-4c57-9a43-2f7d0e5b8a11")
_FIRST_PID = 4000
PORT_METHODS = frozenset(
    {
        "gpus",
        "profiles",
        "gpu_instances",
        "create_gpu_instance",
        "create_compute_instance",
        "destroy_gpu_instance",
        "destroy_compute_instance",
        "busy_gpu_instances",
    }
)


class SimulatedCrash(BaseException):
    """The process died here (kill -9). A BaseException so no ``except Exception`` in the code under
    test can swallow it: the test catches it and "restarts" from the state left behind."""


@dataclass(frozen=True)
class SimProcess:
    """A process running in a MIG device, as nvmlDeviceGetComputeRunningProcesses reports it."""

    pid: int
    gi_id: int
    ci_id: int = CI_ID
    pid_namespace: str = "host"
    """The PID namespace it runs in (a pod's own, unless the pod shares the host's)."""


@dataclass
class _Ci:
    ci_id: int
    slices: int
    device_uuid: str


@dataclass
class _Gi:
    gi_id: int
    profile: Profile
    start: int
    cis: dict[int, _Ci] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Has exactly the compute instance nos creates: one, spanning the GPU instance."""
        return len(self.cis) == 1 and next(iter(self.cis.values())).slices == self.profile.compute

    @property
    def device_uuid(self) -> str | None:
        """The MIG device UUID of a complete instance."""
        return next(iter(self.cis.values())).device_uuid if self.complete else None


@dataclass
class _Gpu:
    index: int
    model: GpuModel
    name: str
    uuid: str
    mig_enabled: bool
    mig_pending: bool
    instances: dict[int, _Gi] = field(default_factory=dict)
    processes: list[SimProcess] = field(default_factory=list)


def _next_pid(g: _Gpu) -> int:
    return max((p.pid for p in g.processes), default=_FIRST_PID - 1) + 1


def resolve_model(name: str, catalog: Catalog | None = None) -> GpuModel:
    """A catalog model from an NVML product name, a ``gpu.product`` label or a catalog model name."""
    cat = catalog or default_catalog()
    model = cat.model_for_product(name.replace(" ", "-"))
    if model is None:
        known = ", ".join(m.name for m in cat.models)
        raise SimulatedNodeError(f"unknown MIG GPU model {name!r} (catalog models: {known})")
    return model


class SimulatedNvml:
    """Simulated GPUs of one node. Not thread-safe, like the port it implements."""

    def __init__(
        self,
        *,
        node: str = "sim",
        driver_version: str = "570.133.20",
        catalog: Catalog | None = None,
        caller: Caller | None = None,
    ):
        self.node = node
        self.driver_version = driver_version
        self.catalog = catalog or default_catalog()
        self.caller = caller or Caller()
        """Who calls (capabilities, PID namespace); tests change it to model the agent's container."""
        self.log: list[str] = []
        """Successful mutating calls, e.g. ``create_gpu_instance 0 3g.40gb@4 -> 7``."""
        self._gpus: list[_Gpu] = []
        self._uuid_serial = 0
        self._failures: dict[str, list[BaseException]] = {}
        self._crash_countdown: int | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def new(
        cls,
        model: str,
        gpus: int = 1,
        *,
        mig_enabled: bool = True,
        node: str = "sim",
        catalog: Catalog | None = None,
        caller: Caller | None = None,
    ) -> SimulatedNvml:
        """``gpus`` empty GPUs of ``model`` (catalog name or product name)."""
        sim = cls(node=node, catalog=catalog, caller=caller)
        for _ in range(gpus):
            sim.add_gpu(model, mig_enabled=mig_enabled)
        return sim

    def add_gpu(
        self,
        model: str,
        *,
        mig_enabled: bool = True,
        mig_pending: bool | None = None,
        name: str | None = None,
        uuid: str | None = None,
    ) -> int:
        """Append a GPU; returns its index."""
        m = resolve_model(model, self.catalog)
        if name is None:
            name = model if " " in model else NVML_NAMES.get(m.name, m.products[0])
        index = len(self._gpus)
        if uuid is None:
            uuid = f"GPU-{uuidlib.uuid5(_UUID_NS, f'{self.node}/gpu/{index}')}"
        pending = mig_enabled if mig_pending is None else mig_pending
        self._gpus.append(_Gpu(index, m, name, uuid, mig_enabled, pending))
        return index

    # ------------------------------------------------------------------ test hooks

    def fail_next(self, method: str, error: NvmlError | SimulatedCrash, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` before doing anything."""
        if method not in PORT_METHODS:
            raise ValueError(f"unknown method {method!r} (one of {sorted(PORT_METHODS)})")
        self._failures.setdefault(method, []).extend([error] * times)

    def crash_after_gpu_instance(self, nth: int = 1) -> None:
        """The ``nth`` next ``create_gpu_instance`` creates the GPU instance, then raises
        ``SimulatedCrash`` before returning: the half-created instance stays, with no compute instance."""
        if nth < 1:
            raise ValueError("nth must be >= 1")
        self._crash_countdown = nth

    def set_processes(self, gpu: int, processes: Iterable[SimProcess]) -> None:
        """Replace the GPU's process table; each process must run in an existing compute instance."""
        g = self._gpu(gpu)
        procs = list(processes)
        for p in procs:
            gi = g.instances.get(p.gi_id)
            if gi is None or p.ci_id not in gi.cis:
                raise ValueError(f"GPU {gpu}: no compute instance {p.ci_id} in GPU instance {p.gi_id}")
        g.processes = procs

    def set_busy(self, gpu: int, gi_id: int, busy: bool = True, *, pid_namespace: str = "host") -> None:
        """Give the instance one running process (or remove all of its processes)."""
        g = self._gpu(gpu)
        others = [p for p in g.processes if p.gi_id != gi_id]
        if busy:
            ci_id = min(self._gi(g, gi_id).cis, default=CI_ID)
            others.append(SimProcess(_next_pid(g), gi_id, ci_id, pid_namespace))
        self.set_processes(gpu, others)

    def processes(self, gpu: int) -> list[SimProcess]:
        """Every process, whoever asks (the test's view, not the caller's)."""
        return list(self._gpu(gpu).processes)

    def add_compute_instance(self, gpu: int, gi_id: int, slices: int) -> int:
        """A compute instance of ``slices`` compute slices in the GPU instance, as ``nvidia-smi mig
        -cci`` makes them (other tools; the port only creates the spanning one); returns its id."""
        g = self._gpu(gpu)
        gi = self._gi(g, gi_id)
        used = sum(c.slices for c in gi.cis.values())
        if slices < 1 or used + slices > gi.profile.compute:
            raise NvmlInsufficientResources(
                f"GPU {gpu}: GPU instance {gi_id} has {gi.profile.compute - used} free compute slices, not {slices}"
            )
        ci_id = next(i for i in range(len(gi.cis) + 1) if i not in gi.cis)
        gi.cis[ci_id] = _Ci(ci_id, slices, self._fresh_mig_uuid(g, gi_id))
        self.log.append(f"add_compute_instance {gpu} {gi_id} {slices}c -> {ci_id}")
        return ci_id

    def compute_instances(self, gpu: int, gi_id: int) -> list[tuple[int, int, str]]:
        """(ci_id, slices, MIG device UUID) of each compute instance of the GPU instance, by id."""
        gi = self._gi(self._gpu(gpu), gi_id)
        return [(c.ci_id, c.slices, c.device_uuid) for _, c in sorted(gi.cis.items())]

    def visible_processes(self, gpu: int, gi_id: int | None = None) -> list[SimProcess]:
        """nvmlDeviceGetComputeRunningProcesses for the caller: the parent GPU's list (``gi_id``
        None) or one MIG device's. Needs the monitor capability on a MIG GPU; processes outside the
        caller's PID namespace are left out, as the driver does."""
        g = self._gpu(gpu)
        if g.mig_enabled and not self.caller.monitor:
            what = "the GPU's" if gi_id is None else f"GPU instance {gi_id}'s"
            raise NvmlNoPermission(f"GPU {gpu}: reading {what} processes needs the MIG monitor capability")
        return [p for p in g.processes if self.caller.sees(p) and (gi_id is None or p.gi_id == gi_id)]

    def total_memory_mib(self, gpu: int) -> int:
        """nvmlDeviceGetMemoryInfo(total) on the parent GPU: aggregate, so denied without the monitor
        capability while MIG is enabled (nos itself never asks)."""
        g = self._gpu(gpu)
        if g.mig_enabled and not self.caller.monitor:
            raise NvmlNoPermission(f"GPU {gpu}: the parent GPU's memory needs the MIG monitor capability")
        return g.model.memory_gb * 1024

    def profile_table(self, gpu: int) -> list[ProfileInfo]:
        """The profile table without the permission check (profile info needs no privilege; only
        the placements in it do)."""
        g = self._mig_gpu(gpu, "profiles")
        return [
            ProfileInfo(
                name=p.name,
                nvml_profile=p.nvml_profile,
                profile_id=PROFILE_IDS[p.nvml_profile],
                slices=p.compute,
                memory_mib=p.memory_gb * 1024,
                max_count=p.max_count,
                placements=tuple((s, p.slots) for s in p.starts),
            )
            for p in g.model.profiles.values()
        ]

    def mig_devices(self, gpu: int) -> list[tuple[int, int, str]]:
        """(gi_id, ci_id, UUID) of every MIG device (compute instance), by id: what CUDA and the
        device plugin enumerate, without privilege."""
        g = self._mig_gpu(gpu, "mig_devices")
        return sorted((gi.gi_id, c.ci_id, c.device_uuid) for gi in g.instances.values() for c in gi.cis.values())

    def require(self, gpu: int, need: str, call: str) -> None:
        """Raise ``NvmlNoPermission`` as the driver does when the caller lacks what ``call`` needs:
        ``read`` (config or monitor capability) or ``configure`` (config capability)."""
        g = self._mig_gpu(gpu, call)
        if need == "configure":
            self._may_configure(g, call)
        else:
            self._may_read(g, call)

    def model(self, gpu: int) -> GpuModel:
        return self._gpu(gpu).model

    def layout(self, gpu: int, complete_only: bool = False) -> tuple[Instance, ...]:
        """The GPU's instances as ``Instance`` (``used`` = has processes), sorted by start."""
        g = self._gpu(gpu)
        busy = {p.gi_id for p in g.processes}
        return tuple(
            sorted(
                Instance(gi.start, gi.profile.name, gi.gi_id in busy)
                for gi in g.instances.values()
                if gi.device_uuid is not None or not complete_only
            )
        )

    # ------------------------------------------------------------------ the Nvml port

    def gpus(self) -> list[GpuInfo]:
        self._enter("gpus")
        return [GpuInfo(g.index, g.uuid, g.name, g.mig_enabled, g.mig_pending) for g in self._gpus]

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        self._enter("profiles")
        g = self._mig_gpu(gpu, "profiles")
        self._may_read(g, "nvmlDeviceGetGpuInstancePossiblePlacements")
        return self.profile_table(gpu)

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        self._enter("gpu_instances")
        g = self._mig_gpu(gpu, "gpu_instances")
        self._may_read(g, "nvmlDeviceGetGpuInstances")
        return [self._info(g, gi) for gi in sorted(g.instances.values(), key=lambda gi: gi.start)]

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        self._enter("create_gpu_instance")
        g = self._mig_gpu(gpu, "create_gpu_instance")
        self._may_configure(g, "create_gpu_instance")
        gi = self._create_gi(g, profile, start)
        self.log.append(f"create_gpu_instance {gpu} {profile}@{start} -> {gi.gi_id}")
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown == 0:
                self._crash_countdown = None
                raise SimulatedCrash(f"crashed after creating GPU instance {gi.gi_id} ({profile}@{start}) on GPU {gpu}")
        return self._info(g, gi)

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        self._enter("create_compute_instance")
        g = self._mig_gpu(gpu, "create_compute_instance")
        self._may_configure(g, "create_compute_instance")
        gi = self._gi(g, gi_id)
        if gi.cis:
            raise NvmlInsufficientResources(f"GPU {gpu}: GPU instance {gi_id} already has compute instances")
        gi.cis[CI_ID] = _Ci(CI_ID, gi.profile.compute, self._fresh_mig_uuid(g, gi_id))
        self.log.append(f"create_compute_instance {gpu} {gi_id}")
        return self._info(g, gi)

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int | None = None) -> None:
        """Not part of the port: the first half of a destroy, as the real adapter does it (one
        compute instance, by default the lowest-numbered)."""
        self._enter("destroy_compute_instance")
        g = self._mig_gpu(gpu, "destroy_compute_instance")
        self._may_configure(g, "destroy_compute_instance")
        gi = self._gi(g, gi_id)
        ci_id = min(gi.cis, default=CI_ID) if ci_id is None else ci_id
        if ci_id not in gi.cis:
            raise NvmlNotFound(f"GPU {gpu}: GPU instance {gi_id} has no compute instance {ci_id}")
        self._check_idle(g, gi, ci_id)
        del gi.cis[ci_id]
        self.log.append(f"destroy_compute_instance {gpu} {gi_id}")

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._enter("destroy_gpu_instance")
        g = self._mig_gpu(gpu, "destroy_gpu_instance")
        self._may_configure(g, "destroy_gpu_instance")
        gi = self._gi(g, gi_id)
        self._check_idle(g, gi)
        del g.instances[gi_id]
        self.log.append(f"destroy_gpu_instance {gpu} {gi_id}")

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        self._enter("busy_gpu_instances")
        self._mig_gpu(gpu, "busy_gpu_instances")
        return {p.gi_id for p in self.visible_processes(gpu)}

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        """The whole state in the simulated-node file format (every GPU explicit, ids and UUIDs kept)."""
        gpus: list[dict[str, Any]] = []
        for g in self._gpus:
            instances = []
            for gi in sorted(g.instances.values(), key=lambda gi: gi.start):
                entry: dict[str, Any] = {"profile": gi.profile.name, "start": gi.start, "gi_id": gi.gi_id}
                if not gi.cis:
                    entry["compute_instance"] = False
                elif gi.complete:
                    entry["device_uuid"] = gi.device_uuid
                else:
                    entry["compute_instances"] = [
                        {"slices": c.slices, "device_uuid": c.device_uuid} for _, c in sorted(gi.cis.items())
                    ]
                pids = [p.pid for p in g.processes if p.gi_id == gi.gi_id]
                if pids:
                    entry["pids"] = pids
                instances.append(entry)
            gpus.append(
                {
                    "model": g.model.name,
                    "name": g.name,
                    "uuid": g.uuid,
                    "mig": g.mig_enabled,
                    "mig_pending": g.mig_pending,
                    "instances": instances,
                }
            )
        out: dict[str, Any] = {
            "node": self.node,
            "driver_version": self.driver_version,
            "uuid_serial": self._uuid_serial,
            "gpus": gpus,
        }
        if self.caller != Caller():
            out["caller"] = asdict(self.caller)
        return out

    @classmethod
    def from_dict(cls, raw: object, source: str = "") -> SimulatedNvml:
        return cls._build(parse_node(raw, source), source)

    @classmethod
    def load(cls, path: Path) -> SimulatedNvml:
        """Read a simulated-node file; ``SimulatedNodeError`` (a ValueError) with one line if invalid."""
        return cls._build(read_node_file(path), "")

    def save(self, path: Path) -> None:
        """Write the state back (atomically) so the next ``nos agent`` run sees this one's result."""
        write_node_file(path, self.to_dict())

    @classmethod
    def _build(cls, spec: NodeFile, source: str) -> SimulatedNvml:
        sim = cls(node=spec.node, driver_version=spec.driver_version, caller=Caller(**spec.caller.model_dump()))
        sim._uuid_serial = spec.uuid_serial
        for i, entry in enumerate(spec.gpus):
            for _ in range(entry.count):
                where = f"{source}: gpus.{i}" if source else f"gpus.{i}"
                try:
                    index = sim.add_gpu(
                        entry.model,
                        mig_enabled=entry.mig,
                        mig_pending=entry.mig_pending,
                        name=entry.name,
                        uuid=entry.uuid,
                    )
                except SimulatedNodeError as e:
                    raise SimulatedNodeError(f"{where}: {e}") from e
                g = sim._gpus[index]
                for j, inst in enumerate(entry.instances):
                    try:
                        gi = sim._create_gi(g, inst.profile, inst.start)
                        if inst.gi_id is not None and inst.gi_id != gi.gi_id:
                            raise NvmlInvalidArgument(
                                f"gi_id {inst.gi_id} given, but the driver numbers this GPU instance {gi.gi_id}"
                            )
                        for ci in inst.compute_instances or []:
                            ci_id = sim.add_compute_instance(index, gi.gi_id, ci.slices)
                            if ci.device_uuid is not None:
                                gi.cis[ci_id].device_uuid = ci.device_uuid
                    except NvmlError as e:
                        raise SimulatedNodeError(f"{where}.instances.{j} ({inst.profile}@{inst.start}): {e}") from e
                    if inst.compute_instance and not inst.compute_instances:
                        uuid = inst.device_uuid or sim._fresh_mig_uuid(g, gi.gi_id)
                        gi.cis[CI_ID] = _Ci(CI_ID, gi.profile.compute, uuid)
                    pids = inst.pids or ([_next_pid(g)] if inst.busy else [])
                    g.processes.extend(SimProcess(pid, gi.gi_id, min(gi.cis)) for pid in pids)
        sim.log.clear()  # building the state is not a driver call
        return sim

    # ------------------------------------------------------------------ internals

    def _enter(self, method: str) -> None:
        queue = self._failures.get(method)
        if queue:
            raise queue.pop(0)

    def _gpu(self, gpu: int) -> _Gpu:
        if not 0 <= gpu < len(self._gpus):
            raise NvmlInvalidArgument(f"no GPU {gpu} (this node has {len(self._gpus)})")
        return self._gpus[gpu]

    def _mig_gpu(self, gpu: int, call: str) -> _Gpu:
        g = self._gpu(gpu)
        if not g.mig_enabled:
            pending = " (enabled after the next GPU reset)" if g.mig_pending else ""
            raise NvmlNotSupported(f"{call}: GPU {gpu} ({g.name}) does not have MIG mode enabled{pending}")
        return g

    def _may_read(self, g: _Gpu, call: str) -> None:
        if not (self.caller.config or self.caller.monitor):
            raise NvmlNoPermission(f"{call}: GPU {g.index}: needs the MIG config or monitor capability (root)")

    def _may_configure(self, g: _Gpu, call: str) -> None:
        if not self.caller.config:
            raise NvmlNoPermission(f"{call}: GPU {g.index}: needs the MIG config capability")

    def _gi(self, g: _Gpu, gi_id: int) -> _Gi:
        gi = g.instances.get(gi_id)
        if gi is None:
            raise NvmlNotFound(f"GPU {g.index}: no GPU instance {gi_id}")
        return gi

    def _check_idle(self, g: _Gpu, gi: _Gi, ci_id: int | None = None) -> None:
        """The driver refuses while processes run there, whether or not the caller can see them."""
        pids = sorted(p.pid for p in g.processes if p.gi_id == gi.gi_id and ci_id in (None, p.ci_id))
        if pids:
            raise NvmlInUse(
                f"GPU {g.index}: GPU instance {gi.gi_id} ({gi.profile.name}@{gi.start}) has running processes {pids}"
            )

    def _create_gi(self, g: _Gpu, profile: str, start: int) -> _Gi:
        p = g.model.profiles.get(profile)
        if p is None:
            raise NvmlInvalidArgument(
                f"GPU {g.index} ({g.model.name}) has no GPU instance profile {profile!r} "
                f"(it has {', '.join(g.model.profiles)})"
            )
        if start not in p.starts:
            raise NvmlInvalidArgument(
                f"GPU {g.index}: {profile} cannot be placed at slot {start} (possible starts {list(p.starts)})"
            )
        current = [Instance(gi.start, gi.profile.name) for gi in g.instances.values()]
        errors = layout_errors(g.model, [*current, Instance(start, profile)])
        if errors:
            raise NvmlInsufficientResources(f"GPU {g.index}: cannot create {profile}@{start}: {'; '.join(errors)}")
        new_id = swizzle_id(g.model, p.slots, start)
        if new_id in g.instances:  # a shape without the binary-tree layout: lowest free id
            new_id = next(i for i in range(1, 256) if i not in g.instances)
        gi = _Gi(new_id, p, start)
        g.instances[new_id] = gi
        return gi

    def _fresh_mig_uuid(self, g: _Gpu, gi_id: int) -> str:
        self._uuid_serial += 1
        return f"MIG-{uuidlib.uuid5(_UUID_NS, f'{g.uuid}/gi/{gi_id}/{self._uuid_serial}')}"

    @staticmethod
    def _info(g: _Gpu, gi: _Gi) -> GpuInstanceInfo:
        cis = [c for _, c in sorted(gi.cis.items())]
        return GpuInstanceInfo(
            gpu=g.index,
            gi_id=gi.gi_id,
            profile=gi.profile.name,
            start=gi.start,
            size=gi.profile.slots,
            compute_instances=tuple(c.ci_id for c in cis),
            device_uuids=tuple(c.device_uuid for c in cis),
            split=bool(cis) and not gi.complete,
        )
