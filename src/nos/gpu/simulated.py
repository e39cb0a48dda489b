"""``SimulatedNvml``: the ``Nvml`` port with NVML's MIG rules in Python, built from the catalog.

Used by agent tests, ``nos simulate`` and ``nos agent --backend simulated:FILE``; also the engine
behind the ctypes-level fake library that tests the real adapter, so both see the same physics:

* creation at a placement fails with ``NvmlInvalidArgument`` for an unknown profile or a start the
  profile does not allow, and with ``NvmlInsufficientResources`` when it would overlap, exceed the
  profile's maximum count, the compute slices or the single set of media engines;
* MIG calls on a GPU whose MIG mode is not enabled raise ``NvmlNotSupported``;
* GPU instance ids are sparse and are not reused at once (a counter, like the driver's);
* a GPU instance has a MIG device UUID only once its compute instance exists;
* destroying an instance with running processes raises ``NvmlInUse``;
* every rejected call leaves the state unchanged.

Tests inject failures with ``fail_next`` and model ``kill -9`` between the two halves of a create
with ``crash_after_gpu_instance``; ``to_dict``/``from_dict`` (and ``save``/``load``) carry the whole
state, so a "restarted" process sees exactly what the dead one left.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nos.gpu.port import (
    GpuInfo,
    GpuInstanceInfo,
    NvmlError,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNotFound,
    NvmlNotSupported,
    ProfileInfo,
)
from nos.gpu.simulated_file import NodeFile, SimulatedNodeError, parse_node, read_node_file, write_node_file
from nos.mig.catalog import Catalog, GpuModel, Profile, default_catalog
from nos.mig.layout import Instance, layout_errors

PROFILE_IDS: dict[int, int] = {0: 19, 7: 20, 9: 15, 1: 14, 2: 9, 3: 5, 4: 0, 8: 6}
"""NVML_GPU_INSTANCE_PROFILE_* index -> driver profile id, as an A100-80GB driver reports them
(the 2-slice ``+me`` id 6 is A30's). Deliberately not the index: code that confuses the two fails."""

FIRST_GI_ID = 7
MAX_GI_ID = 255
CI_ID = 0
"""Id of the one (full) compute instance of a GPU instance; the driver numbers CIs per GI from 0."""

NVML_NAMES: dict[str, str] = {
    "A100-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "H100-80GB": "NVIDIA H100 80GB HBM3",
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


@dataclass
class _Gi:
    gi_id: int
    profile: Profile
    start: int
    device_uuid: str | None = None
    """Set while the compute instance exists."""


@dataclass
class _Gpu:
    index: int
    model: GpuModel
    name: str
    uuid: str
    mig_enabled: bool
    mig_pending: bool
    next_gi_id: int = FIRST_GI_ID
    instances: dict[int, _Gi] = field(default_factory=dict)
    processes: list[SimProcess] = field(default_factory=list)

    def take_gi_id(self) -> int:
        """The driver's counter: next free id, wrapping at MAX_GI_ID; a freed id is not reused at once."""
        for _ in range(MAX_GI_ID):
            candidate = self.next_gi_id
            self.next_gi_id = candidate + 1 if candidate < MAX_GI_ID else 1
            if candidate not in self.instances:
                return candidate
        raise NvmlInsufficientResources(f"GPU {self.index}: no free GPU instance id")  # pragma: no cover


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

    def __init__(self, *, node: str = "sim", driver_version: str = "570.133.20", catalog: Catalog | None = None):
        self.node = node
        self.driver_version = driver_version
        self.catalog = catalog or default_catalog()
        self.log: list[str] = []
        """Successful mutating calls, e.g. ``create_gpu_instance 0 3g.40gb@4 -> 7``."""
        self._gpus: list[_Gpu] = []
        self._uuid_serial = 0
        self._failures: dict[str, list[BaseException]] = {}
        self._crash_countdown: int | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def new(cls, model: str, gpus: int = 1, *, mig_enabled: bool = True, node: str = "sim") -> SimulatedNvml:
        """``gpus`` empty GPUs of ``model`` (catalog name or product name)."""
        sim = cls(node=node)
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
            if gi is None or gi.device_uuid is None or p.ci_id != CI_ID:
                raise ValueError(f"GPU {gpu}: no compute instance {p.ci_id} in GPU instance {p.gi_id}")
        g.processes = procs

    def set_busy(self, gpu: int, gi_id: int, busy: bool = True) -> None:
        """Give the instance one running process (or remove all of its processes)."""
        g = self._gpu(gpu)
        others = [p for p in g.processes if p.gi_id != gi_id]
        if busy:
            others.append(SimProcess(_next_pid(g), gi_id))
        self.set_processes(gpu, others)

    def processes(self, gpu: int) -> list[SimProcess]:
        return list(self._gpu(gpu).processes)

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
        return [
            GpuInfo(g.index, g.uuid, g.name, g.model.memory_gb * 1024, g.mig_enabled, g.mig_pending) for g in self._gpus
        ]

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        self._enter("profiles")
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

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        self._enter("gpu_instances")
        g = self._mig_gpu(gpu, "gpu_instances")
        return [self._info(g, gi) for gi in sorted(g.instances.values(), key=lambda gi: gi.start)]

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        self._enter("create_gpu_instance")
        g = self._mig_gpu(gpu, "create_gpu_instance")
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
        gi = self._gi(g, gi_id)
        if gi.device_uuid is not None:
            raise NvmlInsufficientResources(f"GPU {gpu}: GPU instance {gi_id} already has its compute instance")
        gi.device_uuid = self._fresh_mig_uuid(g, gi_id)
        self.log.append(f"create_compute_instance {gpu} {gi_id}")
        return self._info(g, gi)

    def destroy_compute_instance(self, gpu: int, gi_id: int) -> None:
        """Not part of the port: the first half of a destroy, as the real adapter does it."""
        self._enter("destroy_compute_instance")
        g = self._mig_gpu(gpu, "destroy_compute_instance")
        gi = self._gi(g, gi_id)
        if gi.device_uuid is None:
            raise NvmlNotFound(f"GPU {gpu}: GPU instance {gi_id} has no compute instance")
        self._check_idle(g, gi)
        gi.device_uuid = None
        self.log.append(f"destroy_compute_instance {gpu} {gi_id}")

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._enter("destroy_gpu_instance")
        g = self._mig_gpu(gpu, "destroy_gpu_instance")
        gi = self._gi(g, gi_id)
        self._check_idle(g, gi)
        del g.instances[gi_id]
        self.log.append(f"destroy_gpu_instance {gpu} {gi_id}")

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        self._enter("busy_gpu_instances")
        g = self._mig_gpu(gpu, "busy_gpu_instances")
        return {p.gi_id for p in g.processes}

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        """The whole state in the simulated-node file format (every GPU explicit, ids and UUIDs kept)."""
        gpus: list[dict[str, Any]] = []
        for g in self._gpus:
            instances = []
            for gi in sorted(g.instances.values(), key=lambda gi: gi.start):
                entry: dict[str, Any] = {"profile": gi.profile.name, "start": gi.start, "gi_id": gi.gi_id}
                if gi.device_uuid is None:
                    entry["compute_instance"] = False
                else:
                    entry["device_uuid"] = gi.device_uuid
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
                    "next_gi_id": g.next_gi_id,
                    "instances": instances,
                }
            )
        return {
            "node": self.node,
            "driver_version": self.driver_version,
            "uuid_serial": self._uuid_serial,
            "gpus": gpus,
        }

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
        sim = cls(node=spec.node, driver_version=spec.driver_version)
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
                if entry.next_gi_id is not None:
                    g.next_gi_id = entry.next_gi_id
                for j, inst in enumerate(entry.instances):
                    try:
                        if inst.gi_id is not None and inst.gi_id in g.instances:
                            raise NvmlInvalidArgument(f"GPU instance id {inst.gi_id} used twice")
                        gi = sim._create_gi(g, inst.profile, inst.start, inst.gi_id)
                    except NvmlError as e:
                        raise SimulatedNodeError(f"{where}.instances.{j} ({inst.profile}@{inst.start}): {e}") from e
                    if inst.compute_instance:
                        gi.device_uuid = inst.device_uuid or sim._fresh_mig_uuid(g, gi.gi_id)
                    pids = inst.pids or ([_next_pid(g)] if inst.busy else [])
                    g.processes.extend(SimProcess(pid, gi.gi_id) for pid in pids)
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

    def _gi(self, g: _Gpu, gi_id: int) -> _Gi:
        gi = g.instances.get(gi_id)
        if gi is None:
            raise NvmlNotFound(f"GPU {g.index}: no GPU instance {gi_id}")
        return gi

    def _check_idle(self, g: _Gpu, gi: _Gi) -> None:
        pids = sorted(p.pid for p in g.processes if p.gi_id == gi.gi_id)
        if pids:
            raise NvmlInUse(
                f"GPU {g.index}: GPU instance {gi.gi_id} ({gi.profile.name}@{gi.start}) has running processes {pids}"
            )

    def _create_gi(self, g: _Gpu, profile: str, start: int, gi_id: int | None = None) -> _Gi:
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
        new_id = gi_id if gi_id is not None else g.take_gi_id()
        gi = _Gi(new_id, p, start)
        g.instances[new_id] = gi
        return gi

    def _fresh_mig_uuid(self, g: _Gpu, gi_id: int) -> str:
        self._uuid_serial += 1
        return f"MIG-{uuidlib.uuid5(_UUID_NS, f'{g.uuid}/gi/{gi_id}/{self._uuid_serial}')}"

    @staticmethod
    def _info(g: _Gpu, gi: _Gi) -> GpuInstanceInfo:
        done = gi.device_uuid is not None
        return GpuInstanceInfo(
            gpu=g.index,
            gi_id=gi.gi_id,
            profile=gi.profile.name,
            start=gi.start,
            size=gi.profile.slots,
            compute_instances=(CI_ID,) if done else (),
            device_uuids=(gi.device_uuid,) if gi.device_uuid is not None else (),
        )
