"""Node and Pod objects (API JSON shape) for the doctor tests: a healthy node, then one change each."""

from __future__ import annotations

from typing import Any

from nos.contract.annotations import encode_spec, encode_status
from nos.mig.layout import Instance

A100 = "NVIDIA-A100-SXM4-80GB"
LAYOUT = (Instance(0, "1g.10gb", used=True), Instance(1, "1g.10gb"), Instance(4, "3g.40gb"))


def healthy_annotations(plan: str = "p1", layout: tuple[Instance, ...] = LAYOUT) -> dict[str, str]:
    spec = encode_spec({0: [Instance(i.start, i.profile) for i in layout]}, plan)
    return {**spec, **encode_status({0: list(layout)}, plan)}


def gpu_node(
    name: str = "gpu-1",
    *,
    opt_in: str | None = "nos.nebuly.ai/gpu-partitioning",
    labels: dict[str, str] | None = None,
    allocatable: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    base = {"nvidia.com/gpu.product": A100, "nvidia.com/gpu.count": "1", "nvidia.com/mig.strategy": "mixed"}
    if opt_in:
        base[opt_in] = "mig"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {**base, **(labels or {})},
            "annotations": healthy_annotations() if annotations is None else annotations,
        },
        "status": {
            "allocatable": allocatable
            if allocatable is not None
            else {"cpu": "32", "nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "2", "nvidia.com/mig-3g.40gb": "1"}
        },
    }


def pod(
    name: str,
    node: str,
    *,
    namespace: str = "nos-system",
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    ready: bool = True,
    waiting: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}
    if waiting:
        status["containerStatuses"] = [{"name": "main", "state": {"waiting": {"reason": waiting}}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "nos"}]},
        "status": status,
    }


AGENT_LABELS = {"app.kubernetes.io/name": "nos", "app.kubernetes.io/component": "mig-agent"}


def agent_pod(node: str, **kwargs: Any) -> dict[str, Any]:
    return pod(f"nos-mig-agent-{node}", node, labels=AGENT_LABELS, **kwargs)


def mig_manager_pod(node: str) -> dict[str, Any]:
    return pod(f"nvidia-mig-manager-{node}", node, namespace="gpu-operator", labels={"app": "nvidia-mig-manager"})
