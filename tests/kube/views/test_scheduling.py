"""The part of kube-scheduler's filtering the planner simulates."""

from __future__ import annotations

from typing import Any

import pytest

from nos.kube.views.objects import NodeInfo, SchedulingClass, Taint, node_from_dict, pod_from_dict
from nos.kube.views.scheduling import insufficient, node_refusal


def node(
    name: str = "n1",
    labels: dict[str, str] | None = None,
    taints: tuple[Taint, ...] = (),
    unschedulable: bool = False,
) -> NodeInfo:
    return NodeInfo(name, labels or {}, {}, {}, unschedulable, taints)


def scheduling_class(**spec: Any) -> SchedulingClass:
    return pod_from_dict({"metadata": {"name": "p"}, "spec": spec}).scheduling_class


def affinity(*terms: dict[str, Any]) -> SchedulingClass:
    return scheduling_class(
        affinity={
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
        }
    )


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}


LABELS = {"zone": "a", "gpu": "a100", "cores": "64"}


def test_no_constraints() -> None:
    assert node_refusal(scheduling_class(), node(labels=LABELS)) is None


def test_node_selector() -> None:
    assert node_refusal(scheduling_class(nodeSelector={"zone": "a"}), node(labels=LABELS)) is None
    assert node_refusal(scheduling_class(nodeSelector={"zone": "a", "gpu": "a100"}), node(labels=LABELS)) is None
    refusal = node_refusal(scheduling_class(nodeSelector={"zone": "b"}), node(labels=LABELS))
    assert refusal == "node does not match the pod's nodeSelector"
    assert node_refusal(scheduling_class(nodeSelector={"missing": ""}), node(labels=LABELS)) is not None


@pytest.mark.parametrize(
    ("term", "matches"),
    [
        (expr("zone", "In", "a", "b"), True),
        (expr("zone", "In", "b"), False),
        (expr("missing", "In", "a"), False),
        (expr("zone", "NotIn", "b"), True),
        (expr("zone", "NotIn", "a"), False),
        (expr("missing", "NotIn", "a"), True),
        (expr("zone", "Exists"), True),
        (expr("missing", "Exists"), False),
        (expr("zone", "DoesNotExist"), False),
        (expr("missing", "DoesNotExist"), True),
        (expr("cores", "Gt", "32"), True),
        (expr("cores", "Gt", "64"), False),
        (expr("cores", "Lt", "65"), True),
        (expr("cores", "Lt", "64"), False),
        (expr("zone", "Gt", "1"), False),  # not an integer
        (expr("missing", "Gt", "1"), False),
        (expr("missing", "Lt", "1"), False),
        (expr("zone", "Bogus", "a"), False),
        ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}, True),
        ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}, False),
        ({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}, False),
        ({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]}, False),
        # expressions and fields of one term are ANDed
        (
            {
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}],
            },
            False,
        ),
        (
            {
                "matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]},
                    {"key": "gpu", "operator": "In", "values": ["h100"]},
                ]
            },
            False,
        ),
        ({}, False),  # an empty term matches nothing
        ({"matchExpressions": []}, False),
    ],
)
def test_required_node_affinity(term: dict[str, Any], matches: bool) -> None:
    refusal = node_refusal(affinity(term), node(labels=LABELS))
    assert (refusal is None) == matches
    if not matches:
        assert refusal == "node does not match the pod's required node affinity"


def test_terms_are_ored() -> None:
    p = affinity(expr("zone", "In", "b"), expr("gpu", "In", "a100"))
    assert node_refusal(p, node(labels=LABELS)) is None
    p = affinity(expr("zone", "In", "b"), {})
    assert node_refusal(p, node(labels=LABELS)) is not None
    assert node_refusal(affinity(), node(labels=LABELS)) is not None, "no term at all matches nothing"


NO_SCHEDULE = Taint("gpu", "yes", "NoSchedule")


@pytest.mark.parametrize(
    ("taint", "tolerations", "ok"),
    [
        (NO_SCHEDULE, [], False),
        (Taint("gpu", "yes", "NoExecute"), [], False),
        (Taint("gpu", "yes", "PreferNoSchedule"), [], True),  # ignored by filtering
        (NO_SCHEDULE, [{"operator": "Exists"}], True),  # empty key with Exists tolerates everything
        (NO_SCHEDULE, [{"operator": "Exists", "effect": "NoSchedule"}], True),
        (NO_SCHEDULE, [{"operator": "Exists", "effect": "NoExecute"}], False),
        (NO_SCHEDULE, [{"key": "gpu", "operator": "Exists"}], True),
        (NO_SCHEDULE, [{"key": "gpu", "operator": "Equal", "value": "yes"}], True),
        (NO_SCHEDULE, [{"key": "gpu", "value": "yes"}], True),  # Equal is the default operator
        (NO_SCHEDULE, [{"key": "gpu", "operator": "Equal", "value": "no"}], False),
        (NO_SCHEDULE, [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute"}], False),
        (NO_SCHEDULE, [{"key": "other", "operator": "Exists"}], False),
        (NO_SCHEDULE, [{"value": "yes"}], False),  # empty key needs Exists
        (Taint("gpu", None, "NoSchedule"), [{"key": "gpu", "operator": "Equal"}], True),
        (Taint("gpu", None, "NoSchedule"), [{"key": "gpu", "operator": "Equal", "value": ""}], True),
        (NO_SCHEDULE, [{"key": "other", "operator": "Exists"}, {"key": "gpu", "operator": "Exists"}], True),
    ],
)
def test_taints_and_tolerations(taint: Taint, tolerations: list[dict[str, str]], ok: bool) -> None:
    refusal = node_refusal(scheduling_class(tolerations=tolerations), node(taints=(taint,)))
    assert (refusal is None) == ok
    if not ok:
        assert refusal == "node has the untolerated taint gpu"


def test_cordoned_node() -> None:
    cordoned = node(unschedulable=True)
    assert node_refusal(scheduling_class(), cordoned) == "node is cordoned"
    tolerate = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert node_refusal(scheduling_class(tolerations=tolerate), cordoned) is None
    assert node_refusal(scheduling_class(tolerations=[{"operator": "Exists"}]), cordoned) is None
    wrong_effect = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoExecute"}]
    assert node_refusal(scheduling_class(tolerations=wrong_effect), cordoned) == "node is cordoned"


def test_node_from_dict_taints_are_checked() -> None:
    n = node_from_dict(
        {
            "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        }
    )
    assert node_refusal(scheduling_class(), n) == "node has the untolerated taint nvidia.com/gpu"
    ok = scheduling_class(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    assert node_refusal(ok, n) is None


def test_insufficient() -> None:
    free = {"cpu": 1000, "memory": 100, "pods": 1}
    assert insufficient({"cpu": 1000, "memory": 100}, free) == []
    assert insufficient({"cpu": 1001, "memory": 101}, free) == ["cpu", "memory"]
    assert insufficient({"example.com/foo": 1}, free) == ["example.com/foo"]
    # plain Kubernetes: every extended resource counts (the planner leaves out the MIG devices it plans)
    assert insufficient({"nvidia.com/mig-1g.10gb": 5}, free) == ["nvidia.com/mig-1g.10gb"]
    assert insufficient({"cpu": 0}, {"pods": 1}) == []
    assert insufficient({}, {"pods": 0}) == ["pods"]
    assert insufficient({"cpu": 1}, {}) == ["cpu", "pods"]
