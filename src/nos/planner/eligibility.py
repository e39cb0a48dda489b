"""Which nodes a scheduling class may go to, computed once per class of alike nodes.

``node_refusal`` reads a node's labels (only the keys the pod's selector and affinity name),
its name (only for ``matchFields``), its taints and whether it is cordoned. Nodes that agree on
those answer alike, so each distinct scheduling class is checked against one node per group instead of
every node: thousands of placements x thousands of nodes stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

from nos.kube.views.objects import NodeInfo, SchedulingClass
from nos.kube.views.scheduling import node_refusal


def _referenced(scheduling_class: SchedulingClass) -> tuple[tuple[str, ...], bool]:
    """Label keys the scheduling class reads, and whether it reads node names."""
    keys = {k for k, _ in scheduling_class.node_selector}
    fields = False
    for term in scheduling_class.affinity or ():
        keys.update(r.key for r in term.expressions)
        fields = fields or bool(term.fields)
    return tuple(sorted(keys)), fields


class Eligibility:
    """Eligible node indices per scheduling class over a fixed list of nodes, cached."""

    def __init__(self, nodes: Sequence[NodeInfo]) -> None:
        self.nodes = list(nodes)
        self._groups: dict[tuple[tuple[str, ...], bool], list[list[int]]] = {}
        self._eligible: dict[SchedulingClass, list[int]] = {}

    def _group(self, keys: tuple[str, ...], fields: bool) -> list[list[int]]:
        groups = self._groups.get((keys, fields))
        if groups is None:
            by: dict[tuple[object, ...], list[int]] = {}
            for i, n in enumerate(self.nodes):
                labels = tuple(n.labels.get(k) for k in keys)
                by.setdefault((labels, n.taints, n.unschedulable, n.name if fields else None), []).append(i)
            groups = self._groups[(keys, fields)] = list(by.values())
        return groups

    def of(self, scheduling_class: SchedulingClass) -> list[int]:
        """Indices (ascending) of the nodes that accept pods of this scheduling class."""
        eligible = self._eligible.get(scheduling_class)
        if eligible is None:
            out: list[int] = []
            for members in self._group(*_referenced(scheduling_class)):
                if node_refusal(scheduling_class, self.nodes[members[0]]) is None:
                    out.extend(members)
            eligible = self._eligible[scheduling_class] = sorted(out)
        return eligible
