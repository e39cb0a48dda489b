"""The simulated cluster: nodes with simulated GPUs, the workload's pods, the scheduler and device
plugin models, all in a ``MemoryKube`` that the partitioner and the agents use like a real API."""

from __future__ import annotations

import bisect
import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial

from nos.kube.fake.memory import MemoryKube
from nos.mig.catalog import Catalog, default_catalog
from nos.mig.layout import Instance
from nos.sim.clock import VirtualClock
from nos.sim.device_plugin import DevicePluginModel
from nos.sim.invariants import check_bound_devices_exist
from nos.sim.metrics import Metrics
from nos.sim.nodes import NvmlFactory, SimNode, arrange, simulated_nvml
from nos.sim.pool import NodePool
from nos.sim.scenario import PodSpec, Scenario
from nos.sim.scheduler import choose_node, queue_order
from nos.sim.workload import NAMESPACE, SimPod

log = logging.getLogger(__name__)


class SimCluster:
    """``static``: every GPU starts with the scenario's static layout (else its group's initial
    layout); ``gpu_layouts``: per node group, one layout per GPU (node after node), overriding both;
    ``pool``: ``"ideal"`` or ``"whole-gpu"`` makes every GPU a pool of slices (``nos.sim.pool``)
    with no MIG instances at all."""

    def __init__(
        self,
        scenario: Scenario,
        pods: Sequence[PodSpec],
        clock: VirtualClock,
        static: bool,
        nvml_factory: NvmlFactory = simulated_nvml,
        catalog: Catalog | None = None,
        gpu_layouts: Mapping[str, Sequence[Mapping[str, int]]] | None = None,
        pool: str | None = None,
    ) -> None:
        self.scenario, self.clock = scenario, clock
        self.catalog = catalog or default_catalog()
        self.kube = MemoryKube(component="sim", clock=lambda: datetime.fromtimestamp(clock.now(), UTC))
        self.nodes: dict[str, SimNode] = {}
        self.pending: dict[str, SimPod] = {}
        self.running: dict[str, SimPod] = {}
        self.admission_failures = 0
        self._pass_queued = False
        self._queues: dict[str, list[tuple[tuple[int, float, str], SimPod]]] = {}
        """Pending pods per MIG resource, each in the scheduler's order (priority, then oldest)."""
        self._unmarked: list[SimPod] = []
        """Arrived since the last pass: marked Unschedulable if that pass cannot bind them."""
        self.on_candidates: Callable[[], None] = lambda: None
        """Called when pods newly became Unschedulable (the partitioner's pod watch)."""
        timings = scenario.timings
        self.plugins = DevicePluginModel(
            self.kube, clock, self.nodes, timings.device_plugin_restart_s, lambda _: self.request_pass()
        )
        for group in scenario.nodes:
            model = self.catalog.model(group.model)
            initial = group.initial_layout
            counts = scenario.static_layout_for(model) if static or initial is None else initial
            per_gpu: list[Mapping[str, int]] = [counts] * (group.count * group.gpus)
            if gpu_layouts is not None and group.name in gpu_layouts:
                per_gpu = list(gpu_layouts[group.name])
            if pool is not None:
                per_gpu = [{}] * (group.count * group.gpus)
            arranged: dict[tuple[tuple[str, int], ...], tuple[Instance, ...]] = {}
            try:
                for c in per_gpu:
                    key = tuple(sorted(c.items()))
                    if key not in arranged:
                        arranged[key] = arrange(model, c) if c else ()
            except ValueError as e:
                raise ValueError(f"node group {group.name}: {e}") from None
            for i in range(group.count):
                name = f"{group.name}-{i}"
                node = SimNode(
                    name,
                    model,
                    group.gpus,
                    nvml_factory(model, group.gpus),
                    round(group.cpu * 1000),
                    round(group.memory_gib * 2**30),
                )
                if pool is not None:
                    node.pool = NodePool(model, group.gpus, whole_gpu=pool == "whole-gpu")
                mine = [arranged[tuple(sorted(c.items()))] for c in per_gpu[i * group.gpus : (i + 1) * group.gpus]]
                node.create_layouts(mine)
                self.nodes[name] = node
                self.kube.add_node(node.manifest(mine))
                self.plugins.start(node)
        self.pods: dict[str, SimPod] = {}
        for spec in pods:
            model_profiles = {self.catalog.model(g.model).profiles.get(spec.profile) for g in scenario.nodes}
            compute = max(p.compute for p in model_profiles if p is not None)
            pod = SimPod(spec, compute)
            self.pods[pod.key] = pod
            clock.at(spec.arrival_s, partial(self.arrive, pod))
        self.metrics = Metrics(total_compute=sum(n.gpus * n.model.compute_slices for n in self.nodes.values()))

    # -- pod lifecycle ------------------------------------------------------------------------------------
    def arrive(self, pod: SimPod) -> None:
        self.kube.add_pod(pod.manifest())
        self.pending[pod.key] = pod
        queue = self._queues.setdefault(pod.resource, [])
        bisect.insort(queue, (queue_order(pod), pod), key=lambda entry: entry[0])
        self._unmarked.append(pod)
        self.request_pass()

    def request_pass(self) -> None:
        """Queue one scheduler pass at the current time (several triggers at once make one pass)."""
        if not self._pass_queued:
            self._pass_queued = True
            self.clock.after(0, self.schedule)

    def schedule(self) -> None:
        """One pass in queue order. A resource no node has GPU room for is passed over for the rest
        of the pass (binds only take room), and the pass stops once that holds for every resource a
        pending pod asks for, which keeps passes short under a backlog. The pods are kept in one
        queue per resource, merged in queue order: the pods looked at, and their order, are those of
        one queue walked from the start, without walking the pods of resources passed over."""
        self._pass_queued = False
        nodes = list(self.nodes.values())
        heads = [(queue[0][0], 0, resource) for resource, queue in self._queues.items() if queue]
        heapq.heapify(heads)
        bound: set[str] = set()
        while heads:
            _, i, resource = heapq.heappop(heads)
            queue = self._queues[resource]
            pod = queue[i][1]
            if i + 1 < len(queue):
                heapq.heappush(heads, (queue[i + 1][0], i + 1, resource))
            if pod.state != "pending":
                continue
            node = choose_node(pod, nodes)
            if node is None and not any(n.gpu_room(resource) for n in nodes):
                heads = [h for h in heads if h[2] != resource]  # no room for it: passed over from now on
                heapq.heapify(heads)
            if node is not None and self._bind(pod, node):
                bound.add(resource)
        for resource in bound:
            self._queues[resource] = [entry for entry in self._queues[resource] if entry[1].state == "pending"]
        newly_unschedulable = False
        for pod in self._unmarked:  # pods this pass could not bind are Unschedulable (once)
            if pod.state == "pending":
                newly_unschedulable = True
                pod.marked_unschedulable = True
                self._set_status(
                    pod,
                    {
                        "phase": "Pending",
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": f"0/{len(self.nodes)} nodes are available: insufficient {pod.resource}",
                            }
                        ],
                    },
                )
        self._unmarked = []
        if newly_unschedulable:
            self.on_candidates()

    def _bind(self, pod: SimPod, node: SimNode) -> bool:
        now = self.clock.t
        if node.pool is not None:  # pool policies: the slices are taken at once, no device object
            gpu = node.pool.allocate(pod.key, pod.spec.profile)
            assert gpu is not None, "the scheduler only picks nodes whose pool fits the pod"
            device, device_at = None, now
        else:
            device = self.plugins.allocate(node, pod.resource, pod.key)
            if device is None:
                self.admission_failures += 1
                log.warning("kubelet on %s: no %s device left for %s", node.name, pod.resource, pod.key)
                return False
            device_at = self.plugins.published_at.get(device, 0.0)
        pod.state, pod.node, pod.device, pod.bound_at = "running", node.name, device, now
        pod.device_at = device_at
        node.used_cpu_m += pod.cpu_m
        node.used_memory_b += pod.memory_b
        node.used_pods += 1
        node.used_mig[pod.resource] += 1
        del self.pending[pod.key]
        self.running[pod.key] = pod
        self.kube.store.merge_patch("pods", pod.name, {"spec": {"nodeName": node.name}}, NAMESPACE)
        self._set_status(pod, {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]})
        self.metrics.started(now, pod)
        if device is not None:
            check_bound_devices_exist(node.name, {device: pod.key}, node.nvml, now)
        self.clock.after(pod.spec.duration_s, lambda: self.finish(pod))
        return True

    def finish(self, pod: SimPod) -> None:
        """The pod's container exits: Succeeded, device freed, then the pod is deleted (as a Job's TTL
        controller would), which keeps the API's lists as short as in a real cluster."""
        node = self.nodes[pod.node or ""]
        now = self.clock.t
        pod.state, pod.finished_at = "done", now
        node.used_cpu_m -= pod.cpu_m
        node.used_memory_b -= pod.memory_b
        node.used_pods -= 1
        node.used_mig[pod.resource] -= 1
        if pod.device is not None:
            self.plugins.release(node, pod.device)
        if node.pool is not None:
            node.pool.release(pod.key)
        del self.running[pod.key]
        self.metrics.finished(now, pod)
        self._set_status(pod, {"phase": "Succeeded"})
        self.kube.remove_pod(NAMESPACE, pod.name)
        self.request_pass()

    def _set_status(self, pod: SimPod, status: dict[str, object]) -> None:
        self.kube.store.merge_patch("pods", pod.name, {"status": status}, NAMESPACE, subresource="status")

    # -- views --------------------------------------------------------------------------------------------
    def devices_in_use(self, node: str) -> dict[str, str]:
        """Device UUID -> pod key of the pods running on ``node``."""
        return dict(self.nodes[node].allocated)

    def all_done(self) -> bool:
        return all(p.state == "done" for p in self.pods.values())

    def resource_of(self, pod_key: str) -> str:
        return self.pods[pod_key].resource
