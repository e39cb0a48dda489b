"""Small builders for the agent tests. The GPUs are ``nos.gpu.simulated.SimulatedNvml`` and the cluster
is ``nos.kube.fake.memory.MemoryKube``: no test-only implementation of either."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nos.gpu.port import GpuInstanceInfo
from nos.gpu.simulated import SimulatedNvml
from nos.kube.fake.memory import MemoryKube, recreate_after
from nos.kube.port import Obj

PLUGIN_NAMESPACE = "gpu-operator"


def node(name: str = "n1", annotations: dict[str, str] | None = None, labelled: bool = True) -> Obj:
    labels = {"nos.nebuly.ai/gpu-partitioning": "mig"} if labelled else {}
    return {
        "metadata": {
            "name": name,
            "uid": "u-" + name,
            "labels": labels,
            "annotations": dict(annotations or {}),
        }
    }


def plugin_pod(
    name: str,
    node_name: str = "n1",
    phase: str = "Running",
    uid: str | None = None,
    namespace: str = PLUGIN_NAMESPACE,
    labels: dict[str, str] | None = None,
) -> Obj:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or "uid-" + name,
            "labels": {"app": "nvidia-device-plugin-daemonset"} if labels is None else labels,
        },
        "spec": {"nodeName": node_name},
        "status": {"phase": phase},
    }


def provision(nvml: SimulatedNvml, gpu: int, profile: str, start: int, complete: bool = True) -> GpuInstanceInfo:
    """An instance made through the port, as an admin (or an earlier agent) would; ``complete=False``
    leaves it half-created (GPU instance without its compute instance)."""
    gi = nvml.create_gpu_instance(gpu, profile, start)
    return nvml.create_compute_instance(gpu, gi.gi_id) if complete else gi


def daemonset(
    kube: MemoryKube, deleted: list[str], delay: float = 0.0, running: bool = True
) -> Callable[[Obj], Awaitable[None]]:
    """A pod-deleted hook playing the device plugin's DaemonSet (``recreate_after``: the pod comes back
    as ``<name>x`` after ``delay``) and, with ``running``, kubelet starting it. Records deleted names."""
    recreate = recreate_after(kube, delay, rename=lambda name: name + "x")

    async def hook(pod: Obj) -> None:
        meta = pod["metadata"]
        deleted.append(meta["name"])
        created = recreate(pod)
        if created is not None:
            await created
        if running:
            fresh = kube.store.get("pods", meta["name"] + "x", meta["namespace"])
            kube.update_pod({**fresh, "status": {"phase": "Running"}})

    return hook


def annotations_of(kube: MemoryKube, name: str = "n1") -> dict[str, str]:
    return dict(kube.store.get("nodes", name)["metadata"].get("annotations") or {})
