"""The contract's pod rules over the Kubernetes view: MIG resources, candidates, MIG devices and problems."""

from __future__ import annotations

from typing import Any

import pytest

from nos.contract.pods import CandidatePod, is_candidate, is_mig_resource, mig_requests, read_pod
from nos.kube.views.objects import PodInfo, pod_from_dict
from tests.kube.views.test_objects import MIG, pending_pod


def pod_from_dict_candidate(obj: dict[str, Any]) -> CandidatePod:
    pod = read_pod(obj)
    assert isinstance(pod, CandidatePod)
    return pod


def test_mig_resources() -> None:
    assert is_mig_resource(MIG) and is_mig_resource("nvidia.com/mig-1g.10gb+me")
    assert not is_mig_resource("nvidia.com/gpu") and not is_mig_resource("cpu")


def test_candidate_by_the_contract() -> None:
    pod = pod_from_dict_candidate(pending_pod(priority=5))
    assert is_candidate(pod)
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
    assert not is_candidate(pod_from_dict(obj))
    assert type(read_pod(obj)) is PodInfo, "only candidates get their MIG devices worked out"


def test_replicaset_owner_is_still_a_candidate() -> None:
    obj = pending_pod()
    obj["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet"}]
    assert is_candidate(pod_from_dict(obj))


def test_container_asking_two_devices() -> None:
    obj = pending_pod(containers=[{"name": "big", "resources": {"limits": {MIG: 2}}}])
    pod = pod_from_dict_candidate(obj)
    assert pod.mig_problem is not None
    assert "container big requests 2 MIG devices" in pod.mig_problem
    assert pod.mig_resource is None
    assert is_candidate(pod), "still a candidate: the planner reports why it cannot serve it"


def test_container_asking_two_profiles() -> None:
    obj = pending_pod(containers=[{"name": "x", "resources": {"limits": {MIG: 1, "nvidia.com/mig-3g.40gb": 1}}}])
    pod = pod_from_dict_candidate(obj)
    assert pod.mig_problem is not None and "container x requests 2 MIG devices" in pod.mig_problem
    assert pod.mig_resource is None


def test_two_containers_one_device_each() -> None:
    obj = pending_pod(
        containers=[
            {"name": "a", "resources": {"limits": {MIG: 1}}},
            {"name": "b", "resources": {"limits": {MIG: 1}}},
        ]
    )
    pod = pod_from_dict_candidate(obj)
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
    assert pod_from_dict_candidate(obj).mig_devices == (MIG, big)
    obj = pending_pod(
        containers=[{"name": "a", "resources": {"limits": {MIG: 1}}}],
        initContainers=[
            {"name": "i1", "resources": {"limits": {big: 1}}},
            {"name": "i2", "resources": {"limits": {big: 1}}},
        ],
    )
    assert pod_from_dict_candidate(obj).mig_devices == (MIG, big), "init containers run one at a time: max, not sum"


def test_fraction_of_a_device_is_a_problem_not_rounded_up() -> None:
    for part in ("requests", "limits"):
        obj = pending_pod(containers=[{"name": "half", "resources": {part: {MIG: "500m"}}}])
        pod = pod_from_dict_candidate(obj)
        assert pod.mig_problem == f"requests 500m {MIG}: extended resources such as MIG devices are whole numbers"
        assert pod.mig_devices == (MIG,), "the view rounds up as the scheduler counts; the problem says why not"


def test_mig_requests_leave_other_resources_out() -> None:
    obj = pending_pod(containers=[{"name": "a", "resources": {"limits": {MIG: 1, "nvidia.com/gpu": 1, "cpu": "1"}}}])
    assert mig_requests(pod_from_dict(obj)) == {MIG: 1}
    assert pod_from_dict_candidate(obj).mig_requests == {MIG: 1}
