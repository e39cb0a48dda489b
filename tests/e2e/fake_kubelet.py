"""A fake kubelet + NVIDIA device plugin (mixed strategy) for one node, over the REAL kube-apiserver.

What a kubelet and the GPU operator's device-plugin DaemonSet do for nos, and nothing more:

* ``start`` registers the Node (admission adds the ``node.kubernetes.io/not-ready`` taint), reports
  capacity/allocatable and ``Ready``, removes the not-ready taint, then runs the device-plugin pod
  (``gpu-operator``, ``app=nvidia-device-plugin-daemonset``, bound with ``spec.nodeName``, phase
  ``Running`` through the status subresource) and publishes the MIG devices;
* publishing: ``status.capacity``/``allocatable`` ``nvidia.com/mig-<profile>`` = the complete MIG
  instances (GPU instance + compute instance) of the node's ``SimulatedNvml`` when the plugin
  started (a ``+me`` instance counts under its base profile, as the plugin advertises it);
* when the plugin pod is deleted (the agent's restart; on the real server a bound pod's delete only
  sets ``deletionTimestamp``) it finishes the delete (grace 0), drops the MIG allocatable to 0
  (kubelet marks the plugin's devices unhealthy) and, ``plugin_restart_delay_s`` later, runs a new
  plugin pod that publishes what exists then;
* pods the scheduler bound here are admitted: each MIG request gets specific published device UUIDs
  (lowest GPU and start first), then the pod is marked ``Running``; ``podresources`` exposes these
  allocations as kubelet's PodResources API does (the agent's in-use detection). A deleted or
  finished pod's devices are freed.

It polls the pods bound to the node (``poll_s``) instead of watching: simple, and quick enough.
NVML state is shared with the agent's NVML worker thread, so both go through ``LockedNvml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.types import PatchType

from nos.gpu.port import GpuInfo, GpuInstanceInfo, ProfileInfo
from nos.gpu.simulated import SimulatedCrash, SimulatedNvml
from tests.realkube.control_plane import now_rfc3339, ready_condition

log = logging.getLogger(__name__)

MIG_PREFIX = "nvidia.com/mig-"
PLUGIN_NAMESPACE = "gpu-operator"
PLUGIN_LABELS = {"app": "nvidia-device-plugin-daemonset"}
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
BASE_RESOURCES = {"cpu": "16", "memory": "64Gi", "pods": "110"}


class LockedNvml:
    """The ``Nvml`` port over a ``SimulatedNvml``, every call under one lock: the agent calls it from its
    NVML worker thread, the fake kubelet from the event loop. ``sim`` can be swapped (a restarted node
    process that sees the state the dead one left)."""

    def __init__(self, sim: SimulatedNvml) -> None:
        self.sim = sim
        self.lock = threading.RLock()
        self.dead = False
        self._gate = threading.Event()
        self._gate.set()
        self.held = threading.Event()
        """Set once a mutating call waits at the closed gate (``hold``)."""

    def hold(self) -> None:
        """Make the next mutating calls wait (on the caller's thread) until ``restart`` kills this handle."""
        self._gate.clear()

    def restart(self) -> LockedNvml:
        """The node's state as a restarted agent process finds it (``to_dict``/``from_dict``); this
        handle is dead from now on: a call still in flight on the old agent's NVML thread fails, as
        if the process had been killed before making it."""
        with self.lock:
            self.dead = True
            fresh = LockedNvml(SimulatedNvml.from_dict(self.sim.to_dict()))
        self._gate.set()
        return fresh

    def _alive(self) -> None:
        if not self._gate.is_set():
            self.held.set()
            self._gate.wait()
        if self.dead:
            raise SimulatedCrash("this agent process is gone")

    def gpus(self) -> list[GpuInfo]:
        with self.lock:
            return self.sim.gpus()

    def profiles(self, gpu: int) -> list[ProfileInfo]:
        with self.lock:
            return self.sim.profiles(gpu)

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        with self.lock:
            return self.sim.gpu_instances(gpu)

    def create_gpu_instance(self, gpu: int, profile: str, start: int) -> GpuInstanceInfo:
        self._alive()
        with self.lock:
            self._alive()
            return self.sim.create_gpu_instance(gpu, profile, start)

    def create_compute_instance(self, gpu: int, gi_id: int) -> GpuInstanceInfo:
        self._alive()
        with self.lock:
            self._alive()
            return self.sim.create_compute_instance(gpu, gi_id)

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._alive()
        with self.lock:
            self._alive()
            self.sim.destroy_gpu_instance(gpu, gi_id)

    def busy_gpu_instances(self, gpu: int) -> set[int]:
        with self.lock:
            return self.sim.busy_gpu_instances(gpu)

    def all_instances(self) -> list[GpuInstanceInfo]:
        """Every GPU instance of the node, complete or not (for assertions)."""
        with self.lock:
            return [gi for g in self.sim.gpus() for gi in self.sim.gpu_instances(g.index)]

    def devices(self) -> list[tuple[int, int, str, str]]:
        """(gpu, start, resource, MIG UUID) of every complete instance, sorted (the plugin's view)."""
        out: list[tuple[int, int, str, str]] = []
        with self.lock:
            for g in self.sim.gpus():
                if not g.mig_enabled:
                    continue
                model = self.sim.model(g.index)
                for gi in self.sim.gpu_instances(g.index):
                    if gi.compute_instances:
                        resource = model.profile(gi.profile).resource
                        out.extend((g.index, gi.start, resource, uuid) for uuid in gi.device_uuids)
        return sorted(out)


@dataclass(frozen=True)
class Allocation:
    namespace: str
    pod: str
    uid: str
    resource: str


@dataclass
class FakeKubelet:
    client: AsyncClient
    name: str
    nvml: LockedNvml
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    """Taints the node keeps (the not-ready taint from admission is removed)."""
    poll_s: float = 0.2
    plugin_restart_delay_s: float = 0.5

    allocations: dict[str, Allocation] = field(default_factory=dict)
    """MIG UUID -> the pod it is allocated to."""
    published: dict[str, int] = field(default_factory=dict)
    published_devices: set[str] = field(default_factory=set)
    plugin_restarts: int = 0
    admission_waits: list[str] = field(default_factory=list)
    """Pods whose MIG request could not be served from the published devices at once (kept pending)."""
    _plugin_uid: str | None = None
    _plugin_generation: int = 0
    _plugin_due: float | None = None
    _advertised: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": self.labels}}
        if self.taints:
            body["spec"] = {"taints": self.taints}
        await self.client.create(cast(Node, Node.from_dict(body)))
        ready = ready_condition()
        status = {"status": {"capacity": BASE_RESOURCES, "allocatable": BASE_RESOURCES, "conditions": [ready]}}
        await self.client.patch(Node.Status, self.name, status, patch_type=PatchType.MERGE)
        # Admission added the not-ready taint at create; a Ready kubelet's node loses it.
        await self.client.patch(Node, self.name, {"spec": {"taints": self.taints or None}}, patch_type=PatchType.MERGE)
        with contextlib.suppress(ApiError):  # 409: another node's kubelet created it
            await self.client.create(Namespace(metadata=ObjectMeta(name=PLUGIN_NAMESPACE)))
        await self._start_plugin()
        self._task = asyncio.create_task(self._loop(), name=f"fake-kubelet-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def podresources(self) -> FakePodResources:
        return FakePodResources(self)

    def allocated_to(self, namespace: str, pod: str) -> set[str]:
        with self._lock:
            return {u for u, a in self.allocations.items() if (a.namespace, a.pod) == (namespace, pod)}

    # -- the device plugin -------------------------------------------------------------------------
    async def _start_plugin(self) -> None:
        self._plugin_generation += 1
        name = f"nvidia-device-plugin-{self.name}-{self._plugin_generation}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": PLUGIN_NAMESPACE, "labels": PLUGIN_LABELS},
            "spec": {
                "nodeName": self.name,
                "containers": [{"name": "plugin", "image": "nvcr.io/nvidia/k8s-device-plugin"}],
                "tolerations": [{"operator": "Exists"}],
            },
        }
        created = await self.client.create(cast(Pod, Pod.from_dict(body)))
        await self._set_running(PLUGIN_NAMESPACE, name)
        assert created.metadata is not None
        self._plugin_uid = created.metadata.uid
        self._plugin_due = None
        await self._publish(self.nvml.devices())

    async def _plugin_gone(self) -> None:
        """The plugin pod is gone: its devices turn unhealthy (allocatable 0) until a new one runs."""
        self.plugin_restarts += 1
        self._plugin_uid = None
        self._plugin_due = asyncio.get_running_loop().time() + self.plugin_restart_delay_s
        await self._publish([])

    async def _publish(self, devices: list[tuple[int, int, str, str]]) -> None:
        counts = Counter(resource for _, _, resource, _ in devices)
        self._advertised |= set(counts)
        mig = {r: str(counts.get(r, 0)) for r in sorted(self._advertised)}
        resources = {**BASE_RESOURCES, **mig}
        patch = {"status": {"capacity": resources, "allocatable": resources}}
        await self.client.patch(Node.Status, self.name, patch, patch_type=PatchType.MERGE)
        with self._lock:
            self.published = dict(counts)
            self.published_devices = {uuid for *_, uuid in devices}
        log.info("node %s: device plugin publishes %s", self.name, dict(sorted(counts.items())))

    # -- kubelet -----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except ApiError as e:  # a conflict or a pod that just went away: next tick sees the new state
                log.info("fake kubelet %s: %s", self.name, e)
            await asyncio.sleep(self.poll_s)

    async def _tick(self) -> None:
        pods = [p async for p in self.client.list(Pod, namespace=ALL_NS, fields={"spec.nodeName": self.name})]
        plugin_alive = False
        alive: set[str] = set()
        for pod in pods:
            meta, spec, status = pod.metadata, pod.spec, pod.status
            assert meta is not None and meta.name is not None and meta.namespace is not None
            uid = meta.uid or ""
            is_plugin = meta.namespace == PLUGIN_NAMESPACE and all(
                (meta.labels or {}).get(k) == v for k, v in PLUGIN_LABELS.items()
            )
            if meta.deletionTimestamp is not None:  # finish the graceful delete: the containers are gone
                with contextlib.suppress(ApiError):
                    await self.client.delete(Pod, meta.name, namespace=meta.namespace, grace_period=0)
                continue
            if is_plugin:
                plugin_alive = plugin_alive or uid == self._plugin_uid
                continue
            phase = status.phase if status is not None else None
            if phase in ("Succeeded", "Failed"):
                continue
            alive.add(uid)
            if phase == "Pending" and spec is not None:
                await self._admit(pod)
        if self._plugin_uid is not None and not plugin_alive:
            await self._plugin_gone()
        with self._lock:
            for uuid in [u for u, a in self.allocations.items() if a.uid not in alive]:
                freed = self.allocations.pop(uuid)
                log.info("node %s: %s freed by pod %s/%s", self.name, uuid, freed.namespace, freed.pod)
        if self._plugin_due is not None and asyncio.get_running_loop().time() >= self._plugin_due:
            await self._start_plugin()

    async def _admit(self, pod: Pod) -> None:
        """Allocate the pod's MIG devices (all or nothing), then mark it Running."""
        assert pod.metadata is not None and pod.spec is not None
        meta = pod.metadata
        key = f"{meta.namespace}/{meta.name}"
        uid = meta.uid or ""
        requests: Counter[str] = Counter()
        for c in pod.spec.containers:
            limits: dict[str, Any] = dict((c.resources.limits or {}) if c.resources else {})
            for resource, value in limits.items():
                if resource.startswith(MIG_PREFIX):
                    requests[resource] += int(str(value))
        with self._lock:
            already = {u for u, a in self.allocations.items() if a.uid == uid}
            if not already and requests:
                chosen: list[tuple[str, str]] = []
                taken = set(self.allocations)
                for _, _, resource, uuid in self.nvml.devices():
                    wanted = requests[resource] > sum(1 for r, _ in chosen if r == resource)
                    if wanted and uuid not in taken and uuid in self.published_devices:
                        chosen.append((resource, uuid))
                if Counter(r for r, _ in chosen) != +requests:
                    self.admission_waits.append(key)
                    return
                for resource, uuid in chosen:
                    self.allocations[uuid] = Allocation(meta.namespace or "", meta.name or "", uid, resource)
                log.info("node %s: pod %s gets %s", self.name, key, sorted(u for _, u in chosen))
        await self._set_running(meta.namespace or "", meta.name or "")

    async def _set_running(self, namespace: str, name: str) -> None:
        now = now_rfc3339()
        kinds = ("Initialized", "ContainersReady", "Ready")
        conditions = [{"type": t, "status": "True", "lastTransitionTime": now} for t in kinds]
        body = {"status": {"phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "conditions": conditions}}
        await self.client.patch(Pod.Status, name, body, namespace=namespace, patch_type=PatchType.STRATEGIC)


class FakePodResources:
    """kubelet's PodResources ``List`` for the agent (``PodResourcesSource``): resource -> allocated UUIDs."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self._kubelet = kubelet

    def allocated(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self._kubelet._lock:
            for uuid, a in self._kubelet.allocations.items():
                out.setdefault(a.resource, set()).add(uuid)
        return out
