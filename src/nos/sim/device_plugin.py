"""The NVIDIA device plugin (mixed strategy) and kubelet's device bookkeeping, as a model.

* The plugin pod of each node lives in ``gpu-operator`` with the GPU operator's label, so the agent's
  ``DevicePluginRestarter`` finds and deletes it exactly as in a cluster.
* When it is deleted, kubelet marks the plugin's devices unhealthy: the node's ``nvidia.com/mig-*``
  allocatable drops to 0 at once. After ``restart_delay_s`` a new plugin pod runs (the DaemonSet, via
  ``MemoryKube``'s pod-deleted hook) and publishes one device per complete MIG instance that exists
  on the node then.
* At bind time kubelet allocates a specific device: a published one that still exists and is not
  allocated (lowest GPU index and start slot first). ``PodResources`` reports these allocations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from nos.config import DevicePluginConfig
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Obj
from nos.sim.clock import VirtualClock
from nos.sim.nodes import SimNode

PLUGIN_APP = "nvidia-device-plugin-daemonset"


def plugin_pod(node: str, generation: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"nvidia-device-plugin-{node}-{generation}",
            "namespace": namespace,
            "labels": {"app": PLUGIN_APP},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "nvidia-device-plugin"}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "plugin"}]},
        "status": {"phase": "Running"},
    }


class SimPodResources:
    """kubelet's PodResources for one node, from the simulator's device allocations (the agent's
    ``PodResourcesSource`` interface)."""

    def __init__(self, node: SimNode, resource_of: Callable[[str], str]) -> None:
        self._node, self._resource_of = node, resource_of

    def allocated(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for uuid, pod in self._node.allocated.items():
            out.setdefault(self._resource_of(pod), set()).add(uuid)
        return out


class DevicePluginModel:
    def __init__(
        self,
        kube: MemoryKube,
        clock: VirtualClock,
        nodes: dict[str, SimNode],
        restart_delay_s: float,
        on_publish: Callable[[SimNode], None],
        config: DevicePluginConfig | None = None,
    ) -> None:
        self.kube, self.clock, self.nodes = kube, clock, nodes
        self.restart_delay_s = restart_delay_s
        self.config = config or DevicePluginConfig()
        self.on_publish = on_publish
        self.restarts: Counter[str] = Counter()
        self.published_at: dict[str, float] = {}
        """Device UUID -> when a plugin first advertised it."""
        kube.on_pod_deleted(self._deleted)

    def start(self, node: SimNode) -> None:
        """Plugin pod running and devices published (cluster set-up)."""
        self.kube.add_pod(plugin_pod(node.name, node.plugin_generation, self.config.namespace))
        self.publish(node)

    def _deleted(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None or meta.get("namespace") != self.config.namespace:
            return
        if (meta.get("labels") or {}).get("app") != PLUGIN_APP:
            return
        self.restarts[node.name] += 1
        node.plugin_up = False
        node.advertised = {}
        node.advertised_devices = set()
        self._write_allocatable(node)
        self.clock.after(self.restart_delay_s, lambda: self._recreate(node))

    def _recreate(self, node: SimNode) -> None:
        node.plugin_generation += 1
        self.kube.add_pod(plugin_pod(node.name, node.plugin_generation, self.config.namespace))
        self.publish(node)

    def devices(self, node: SimNode) -> list[tuple[int, int, str, str]]:
        """(gpu, start, resource, uuid) of every complete MIG instance on the node now."""
        out: list[tuple[int, int, str, str]] = []
        for gpu in node.nvml.gpus():
            for gi in node.nvml.gpu_instances(gpu.index):
                if not gi.compute_instances:
                    continue
                resource = node.model.profile(gi.profile).resource
                out.extend((gpu.index, gi.start, resource, uuid) for uuid in gi.device_uuids)
        return sorted(out)

    def publish(self, node: SimNode) -> None:
        devices = self.devices(node)
        node.plugin_up = True
        node.advertised = dict(Counter(resource for _, _, resource, _ in devices))
        node.advertised_devices = {uuid for *_, uuid in devices}
        for uuid in node.advertised_devices:
            self.published_at.setdefault(uuid, self.clock.t)
        self._write_allocatable(node)
        self.on_publish(node)

    def allocate(self, node: SimNode, resource: str, pod: str) -> str | None:
        """kubelet's device allocation at admission; None if no published device is available."""
        for _, _, res, uuid in self.devices(node):
            if res == resource and uuid in node.advertised_devices and uuid not in node.allocated:
                node.allocated[uuid] = pod
                return uuid
        return None

    def release(self, node: SimNode, uuid: str) -> None:
        node.allocated.pop(uuid, None)

    def _write_allocatable(self, node: SimNode) -> None:
        current = self.kube.store.get("nodes", node.name)
        allocatable = node.allocatable()
        current["status"] = {**(current.get("status") or {}), "allocatable": allocatable, "capacity": allocatable}
        self.kube.store.replace("nodes", node.name, current, subresource="status")
