"""Pod and Node views: effective requests, scheduling class, phases, malformed objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nos.kube.views.objects import ObjectError, Taint, Toleration, node_from_dict, pod_from_dict

MIG = "nvidia.com/mig-1g.10gb"


def pending_pod(**spec: Any) -> dict[str, Any]:
    """A Pending pod the scheduler found unschedulable, asking one MIG device (a candidate by the
    contract: tests/contract/test_pods.py)."""
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {MIG: 1}}}], **spec},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def test_effective_requests() -> None:
    obj = pending_pod(
        containers=[
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", MIG: 1}}},
            {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "512Mi"}}},
            {"name": "c"},
        ],
        initContainers=[
            {"name": "i1", "resources": {"requests": {"cpu": "3", "memory": "100Mi"}}},
            {"name": "i2", "resources": {"requests": {"memory": "4Gi"}}},
        ],
        overhead={"cpu": "100m", "memory": "10Mi"},
    )
    pod = pod_from_dict(obj)
    # cpu: max(500m + 250m, 3000m) + 100m ; memory: max(1Gi + 512Mi, 4Gi) + 10Mi
    assert pod.requests["cpu"] == 3100
    assert pod.requests["memory"] == 4 * 2**30 + 10 * 2**20
    # the limit of an extended resource is its request
    assert pod.requests[MIG] == 1


def test_requests_override_limits() -> None:
    obj = pending_pod(containers=[{"name": "a", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "4"}}}])
    assert pod_from_dict(obj).requests == {"cpu": 1000}


def test_scheduling_class_fields() -> None:
    obj = pending_pod(
        nodeSelector={"zone": "a", "gpu": "yes"},
        tolerations=[
            {"operator": "Exists"},
            {"key": "k", "value": "v", "effect": "NoSchedule"},
        ],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", 2]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                    ]
                }
            }
        },
    )
    scheduling_class = pod_from_dict(obj).scheduling_class
    assert scheduling_class.node_selector == (("gpu", "yes"), ("zone", "a"))
    assert scheduling_class.tolerations == (
        Toleration(None, "Exists", None, None),
        Toleration("k", "Equal", "v", "NoSchedule"),
    )
    assert scheduling_class.affinity is not None and len(scheduling_class.affinity) == 2
    assert scheduling_class.affinity[0].expressions[0].values == ("1", "2")
    assert scheduling_class.affinity[1].fields[0].key == "metadata.name"
    # identical pods share the scheduling class (hashable and equal)
    assert hash(scheduling_class) == hash(pod_from_dict(copy.deepcopy(obj)).scheduling_class)
    assert pod_from_dict(pending_pod()).scheduling_class.affinity is None


def test_unschedulable_pod_view() -> None:
    pod = pod_from_dict(pending_pod(priority=5))
    assert pod.key == "ns/p" and pod.priority == 5 and pod.phase == "Pending" and pod.node_name is None
    assert pod.unschedulable and not pod.nominated and pod.owner_kinds == () and not pod.terminated
    assert pod.requests == {MIG: 1} and pod.created == "2026-01-01T00:00:00Z"


def test_terminated_and_defaults() -> None:
    obj = pending_pod()
    obj["status"]["phase"] = "Succeeded"
    assert pod_from_dict(obj).terminated
    obj["metadata"].pop("namespace")
    assert pod_from_dict(obj).namespace == "default"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["spec"]["containers"][0]["resources"]["limits"].update({"cpu": "lots"}),
        lambda p: p["spec"]["containers"][0]["resources"]["limits"].update({"cpu": True}),
        lambda p: p["spec"].update({"priority": "high"}),
        lambda p: p["spec"].update({"containers": "main"}),
        lambda p: p["spec"].update({"tolerations": ["x"]}),
        lambda p: p["spec"].update(
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"operator": "In"}]}]
                        }
                    }
                }
            }
        ),
        lambda p: p["metadata"].update({"name": ""}),
        lambda p: p.update({"metadata": "p"}),
        lambda p: p.update({"spec": ["x"]}),
        lambda p: p.update({"status": "Pending"}),
    ],
)
def test_malformed_pod_raises_object_error(mutate: Any) -> None:
    obj = pending_pod()
    mutate(obj)
    with pytest.raises(ObjectError):
        pod_from_dict(obj)


def _node(**kw: Any) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"a": "b", "n": 3}, "annotations": {"x": "y"}},
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": True},
        "status": {"allocatable": {"cpu": "7500m", "memory": "1Gi", "pods": "110", MIG: "2"}},
        **kw,
    }


def test_node_view() -> None:
    node = node_from_dict(_node())
    assert node.name == "n1" and node.labels == {"a": "b", "n": "3"} and node.annotations == {"x": "y"}
    assert node.allocatable == {"cpu": 7500, "memory": 2**30, "pods": 110, MIG: 2}
    assert node.unschedulable and node.taints == (Taint("k", None, "NoSchedule"),)
    bare = node_from_dict({"metadata": {"name": "m"}})
    assert bare.allocatable == {} and not bare.unschedulable and bare.taints == ()


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {}},
        {"metadata": "n1"},
        {"metadata": {"name": "n1", "labels": ["a"]}},
        {"metadata": {"name": "n1"}, "spec": {"taints": [{"effect": "NoSchedule"}]}},
        {"metadata": {"name": "n1"}, "spec": "x"},
        {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "x"}}},
        {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": True}}},
        {"metadata": {"name": "n1"}, "status": {"allocatable": ["cpu"]}},
    ],
)
def test_malformed_node_raises_object_error(obj: dict[str, Any]) -> None:
    with pytest.raises(ObjectError):
        node_from_dict(obj)
