"""The part of kube-scheduler's filtering the planner simulates: node refusal and resource fit.

Simulated: resource fit (cpu, memory, ephemeral-storage, pod count, extended resources) against
allocatable minus what bound pods request; ``nodeSelector``; required node affinity
(matchExpressions and matchFields); NoSchedule/NoExecute taints against tolerations; cordoned
nodes. Not simulated (the real scheduler may still refuse): inter-pod (anti-)affinity, topology
spread, host ports, volume limits and zones, preferred affinities, preemption, resource quotas.
"""

from __future__ import annotations

from collections.abc import Mapping

from nos.kube.views.objects import POD_COUNT, NodeInfo, Requirement, SchedulingClass, SelectorTerm, Taint, Toleration

UNSCHEDULABLE_TAINT = Taint("node.kubernetes.io/unschedulable", None, "NoSchedule")


def _requirement_matches(req: Requirement, value: str | None) -> bool:
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and req.values:
        try:
            a, b = int(value), int(req.values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def _term_matches(term: SelectorTerm, node: NodeInfo) -> bool:
    if not term.expressions and not term.fields:
        return False  # an empty term matches nothing, as in kube-scheduler
    if not all(_requirement_matches(r, node.labels.get(r.key)) for r in term.expressions):
        return False
    return all(_requirement_matches(r, node.name if r.key == "metadata.name" else None) for r in term.fields)


def _tolerated(taint: Taint, tolerations: tuple[Toleration, ...]) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def node_refusal(scheduling_class: SchedulingClass, node: NodeInfo) -> str | None:
    """Why a pod of this scheduling class cannot go to ``node`` regardless of resources, or None."""
    if node.unschedulable and not _tolerated(UNSCHEDULABLE_TAINT, scheduling_class.tolerations):
        return "node is cordoned"
    for key, value in scheduling_class.node_selector:
        if node.labels.get(key) != value:
            return "node does not match the pod's nodeSelector"
    affinity = scheduling_class.affinity
    if affinity is not None and not any(_term_matches(t, node) for t in affinity):
        return "node does not match the pod's required node affinity"
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not _tolerated(taint, scheduling_class.tolerations):
            return f"node has the untolerated taint {taint.key}"
    return None


def insufficient(requests: Mapping[str, int], free: Mapping[str, int]) -> list[str]:
    """Resources the node lacks for ``requests``, a pod slot included (the caller leaves out the
    resources it plans itself, such as MIG devices)."""
    lacking = [r for r, n in requests.items() if n > 0 and n > free.get(r, 0)]
    if free.get(POD_COUNT, 0) < 1:
        lacking.append(POD_COUNT)
    return sorted(lacking)
