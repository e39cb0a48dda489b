"""Pod and Node views: effective requests, the contract's candidate definition, MIG problems."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nos.kube.views.objects import ObjectError, Taint, Toleration, node_from_dict, pod_from_dict

MIG = "nvidia.com/mig-1g.10gb"


def pending_pod(**spec: Any) -> dict[str, Any]:
    """A candidate by the contract: Pending, unbound, Unschedulable, asking one MIG device."""
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {MIG: 1}}}], **spec},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def test_candidate_by_the_contract() -> None:
    pod = pod_from_dict(pending_pod(priority=5))
    assert pod.is_candidate
    assert pod.key == "ns/p" and pod.priority == 5
    assert pod.mig_requests == {MIG: 1} and pod.mig_resource == MIG
    assert pod.mig_problem is None and not pod.terminated


def _bound(p: dict[str, Any]) -> None:
    p["spec"]["nodeName"] = "n1"


def _running(p: dict[str, Any]) -> None:
    p["status"]["phase"] = "Running"


def _scheduled(p: dict[str, Any]) -> None:
    p["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]


def _other_reason(p: dict[str, Any]) -> None:
    p["status"]["conditions"][0]["reason"] = "SchedulingGated"


def _no_conditions(p: dict[str, Any]) -> None:
    del p["status"]["conditions"]


def _nominated(p: dict[str, Any]) -> None:
    p["status"]["nominatedNodeName"] = "n1"


def _daemonset(p: dict[str, Any]) -> None:
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet"}, {"kind": "DaemonSet"}]


def _node_owned(p: dict[str, Any]) -> None:
    p["metadata"]["ownerReferences"] = [{"kind": "Node"}]


def _no_mig(p: dict[str, Any]) -> None:
    p["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1, "cpu": "1"}}


def _zero_mig(p: dict[str, Any]) -> None:
    p["spec"]["containers"][0]["resources"] = {"limits": {MIG: 0}}


@pytest.mark.parametrize(
    "flip",
    [
        _bound,
        _running,
        _scheduled,
        _other_reason,
        _no_conditions,
        _nominated,
        _daemonset,
        _node_owned,
        _no_mig,
        _zero_mig,
    ],
)
def test_each_condition_flipped_is_not_a_candidate(flip: Any) -> None:
    obj = pending_pod()
    flip(obj)
    assert not pod_from_dict(obj).is_candidate


def test_replicaset_owner_is_still_a_candidate() -> None:
    obj = pending_pod()
    obj["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet"}]
    assert pod_from_dict(obj).is_candidate


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
    assert pod.requests[MIG] == 1 and pod.mig_resource == MIG


def test_requests_override_limits() -> None:
    obj = pending_pod(containers=[{"name": "a", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "4"}}}])
    assert pod_from_dict(obj).requests == {"cpu": 1000}


def test_container_asking_two_devices() -> None:
    obj = pending_pod(containers=[{"name": "big", "resources": {"limits": {MIG: 2}}}])
    pod = pod_from_dict(obj)
    assert pod.mig_problem is not None
    assert "container big requests 2 MIG devices" in pod.mig_problem
    assert pod.mig_resource is None
    assert pod.is_candidate, "still a candidate: the planner reports why it cannot serve it"


def test_container_asking_two_profiles() -> None:
    obj = pending_pod(containers=[{"name": "x", "resources": {"limits": {MIG: 1, "nvidia.com/mig-3g.40gb": 1}}}])
    pod = pod_from_dict(obj)
    assert pod.mig_problem is not None and "container x requests 2 MIG devices" in pod.mig_problem
    assert pod.mig_resource is None


def test_two_containers_one_device_each() -> None:
    obj = pending_pod(
        containers=[
            {"name": "a", "resources": {"limits": {MIG: 1}}},
            {"name": "b", "resources": {"limits": {MIG: 1}}},
        ]
    )
    pod = pod_from_dict(obj)
    assert pod.mig_problem is None, "one device per container is what the contract allows"
    assert pod.requests[MIG] == 2 and pod.mig_resource is None
    assert pod.mig_devices == (MIG, MIG)


def test_mig_devices_counted_as_the_scheduler_counts_extended_resources() -> None:
    """Sum over containers, max with each init container, plus overhead."""
    big = "nvidia.com/mig-3g.40gb"
    obj = pending_pod(
        containers=[
            {"name": "a", "resources": {"limits": {MIG: 1}}},
            {"name": "b", "resources": {"limits": {big: 1}}},
        ],
        initContainers=[{"name": "init", "resources": {"limits": {MIG: 1}}}],
    )
    assert pod_from_dict(obj).mig_devices == (MIG, big)
    obj = pending_pod(
        containers=[{"name": "a", "resources": {"limits": {MIG: 1}}}],
        initContainers=[
            {"name": "i1", "resources": {"limits": {big: 1}}},
            {"name": "i2", "resources": {"limits": {big: 1}}},
        ],
    )
    assert pod_from_dict(obj).mig_devices == (MIG, big), "init containers run one at a time: max, not sum"


def test_placement_fields() -> None:
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
    placement = pod_from_dict(obj).placement
    assert placement.node_selector == (("gpu", "yes"), ("zone", "a"))
    assert placement.tolerations == (
        Toleration(None, "Exists", None, None),
        Toleration("k", "Equal", "v", "NoSchedule"),
    )
    assert placement.affinity is not None and len(placement.affinity) == 2
    assert placement.affinity[0].expressions[0].values == ("1", "2")
    assert placement.affinity[1].fields[0].key == "metadata.name"
    # identical pods share the scheduling class (hashable and equal)
    assert hash(placement) == hash(pod_from_dict(copy.deepcopy(obj)).placement)
    assert pod_from_dict(pending_pod()).placement.affinity is None


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
