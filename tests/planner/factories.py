"""Builders of Node and Pod objects (API dict shape) for planner tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nos.contract.annotations import encode_spec, encode_status
from nos.mig.layout import Instance

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"
A30 = "NVIDIA-A30"


def node(
    name: str,
    product: str = A100,
    gpus: int | None = None,
    status: Mapping[int, Sequence[Instance]] | None = None,
    *,
    cpu: str = "64",
    memory: str = "512Gi",
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] = (),
    unschedulable: bool = False,
    spec_matches_status: bool = True,
    extra_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if status is not None:
        annotations.update(encode_status(status, "plan-0"))
        if spec_matches_status:
            annotations.update(encode_spec({i: [x.freed() for x in v] for i, v in status.items()}, "plan-0"))
    annotations.update(extra_annotations or {})
    count = gpus if gpus is not None else (max(status) + 1 if status else 1)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "nos.nebuly.ai/gpu-partitioning": "mig",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(count),
                **(labels or {}),
            },
            "annotations": annotations,
        },
        "spec": {"taints": list(taints), "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}},
    }


def pod(
    name: str,
    profile: str | None = "1g.10gb",
    *,
    namespace: str = "default",
    priority: int = 0,
    cpu: str = "1",
    memory: str = "1Gi",
    node_name: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Iterable[Mapping[str, str]] = (),
    created: str = "2026-11-29T10:00:00Z",
    mig_count: int = 1,
    more: Sequence[str] = (),
    init: Sequence[str] = (),
) -> dict[str, Any]:
    """A pod; ``more`` adds one container per further MIG device, ``init`` one init container per
    profile."""
    limits = {f"nvidia.com/mig-{profile}": mig_count} if profile else {}
    containers = [{"name": "main", "resources": {"limits": limits, "requests": {"cpu": cpu, "memory": memory}}}]
    containers += [
        {"name": f"side{i}", "resources": {"limits": {f"nvidia.com/mig-{p}": 1}}} for i, p in enumerate(more)
    ]
    spec: dict[str, Any] = {"priority": priority, "containers": containers, "tolerations": list(tolerations)}
    if init:
        spec["initContainers"] = [
            {"name": f"init{i}", "resources": {"limits": {f"nvidia.com/mig-{p}": 1}}} for i, p in enumerate(init)
        ]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if node_name:
        spec["nodeName"] = node_name
        status: dict[str, Any] = {"phase": "Running"}
    else:
        status = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
        "status": status,
    }


def flexible_and_pinned() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two nodes with room for one pod each; a flexible pod, planned first (older), takes the only
    node the pinned pod may use unless the plan looks further than one pod at a time."""
    whole = {0: [Instance(0, "7g.80gb")]}
    nodes = [
        node("a", status=whole, cpu="2", labels={"zone": "a"}),
        node("b", status=whole, cpu="2", labels={"zone": "b"}),
    ]
    pods = [
        pod("flex", "1g.10gb", cpu="2", created="2026-11-29T10:00:00Z"),
        pod("pinned", "1g.10gb", cpu="2", node_selector={"zone": "a"}, created="2026-11-29T10:00:01Z"),
    ]
    return nodes, pods
