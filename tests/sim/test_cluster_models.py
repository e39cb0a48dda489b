"""The scheduler and device plugin models on their own (no partitioner, no agent)."""

from __future__ import annotations

import asyncio

from nos.sim.clock import VirtualClock
from nos.sim.cluster import SimCluster
from nos.sim.nodes import NvmlFactory
from nos.sim.workload import NAMESPACE
from tests.sim.helpers import pod, tiny


def _cluster(nvml_factory: NvmlFactory, *pods_: object, **kw: object) -> tuple[VirtualClock, SimCluster]:
    clock = VirtualClock()
    scenario = tiny(list(pods_), **kw)  # type: ignore[arg-type]
    return clock, SimCluster(scenario, scenario.all_pods(), clock, static=False, nvml_factory=nvml_factory)


def _run(clock: VirtualClock, until: float) -> None:
    asyncio.run(clock.run_until(until))


def _pod_obj(cluster: SimCluster, name: str) -> dict[str, object]:
    return cluster.kube.store.get("pods", name, NAMESPACE)


def test_scheduler_binds_fits_and_frees_devices(nvml_factory: NvmlFactory) -> None:
    clock, cluster = _cluster(
        nvml_factory,
        pod("a", "3g.40gb", at=0, duration=100),
        pod("b", "3g.40gb", at=0, duration=300),
        pod("c", "3g.40gb", at=10, duration=100),
        layout={"3g.40gb": 2},
    )
    _run(clock, 50)
    a, b, c = (cluster.pods[f"{NAMESPACE}/{n}"] for n in "abc")
    assert a.state == b.state == "running" and a.device != b.device
    node = cluster.nodes["n-0"]
    assert node.used_mig["nvidia.com/mig-3g.40gb"] == 2 and set(node.allocated) == {a.device, b.device}
    obj = _pod_obj(cluster, "c")
    assert obj["status"]["conditions"][0]["reason"] == "Unschedulable"  # type: ignore[index]
    assert _pod_obj(cluster, "a")["spec"]["nodeName"] == "n-0"  # type: ignore[index]
    _run(clock, 150)  # a finished at 100: its device goes to c
    assert a.state == "done" and node.allocated[a.device or ""] == c.key
    assert c.state == "running" and c.bound_at == 100 and c.device == a.device
    assert node.used_mig["nvidia.com/mig-3g.40gb"] == 2
    _run(clock, 1000)
    assert all(p.state == "done" for p in (a, b, c)) and not node.allocated and node.used_cpu_m == 0


def test_scheduler_respects_cpu_and_priority(nvml_factory: NvmlFactory) -> None:
    clock, cluster = _cluster(
        nvml_factory,
        pod("low", "1g.10gb", at=0, cpu=6),
        pod("high", "1g.10gb", at=0, cpu=6, priority=10),
        layout={"1g.10gb": 7},
        cpu=8,
    )
    _run(clock, 1)
    assert cluster.pods[f"{NAMESPACE}/high"].state == "running"
    assert cluster.pods[f"{NAMESPACE}/low"].state == "pending"  # cpu, not MIG, is short


def test_device_plugin_publishes_after_restart_delay(nvml_factory: NvmlFactory) -> None:
    clock, cluster = _cluster(nvml_factory, layout={"7g.80gb": 1})
    node = cluster.nodes["n-0"]

    def allocatable() -> dict[str, str]:
        return cluster.kube.store.get("nodes", "n-0")["status"]["allocatable"]  # type: ignore[no-any-return]

    assert allocatable()["nvidia.com/mig-7g.80gb"] == "1"
    gi = node.nvml.gpu_instances(0)[0]
    node.nvml.destroy_gpu_instance(0, gi.gi_id)
    for start in (0, 4):
        created = node.nvml.create_gpu_instance(0, "3g.40gb", start)
        node.nvml.create_compute_instance(0, created.gi_id)
    plugin = cluster.kube.store.list("pods", "gpu-operator")[0][0]
    cluster.kube.remove_pod("gpu-operator", plugin["metadata"]["name"])
    assert not any(k.startswith("nvidia.com/mig-") for k in allocatable())  # kubelet: plugin gone
    _run(clock, 19)
    assert not cluster.kube.store.list("pods", "gpu-operator")[0] and not node.plugin_up
    _run(clock, 20)
    pods, _ = cluster.kube.store.list("pods", "gpu-operator")
    assert [p["status"]["phase"] for p in pods] == ["Running"] and pods[0]["spec"]["nodeName"] == "n-0"
    assert allocatable()["nvidia.com/mig-3g.40gb"] == "2" and "nvidia.com/mig-7g.80gb" not in allocatable()
    assert cluster.plugins.restarts["n-0"] == 1
