"""Reads what ``nos doctor`` checks through the ``Kube`` port: a handful of list calls, nothing written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nos.contract.annotations import PARTITIONING_LABELS, PARTITIONING_MIG
from nos.kube.port import Kube, Obj

DEFAULT_AGENT_SELECTOR = "app.kubernetes.io/name=nos,app.kubernetes.io/component=mig-agent"
"""The labels the Helm chart puts on MIG agent pods."""
DEFAULT_MIG_MANAGER_SELECTOR = "app=nvidia-mig-manager"
"""The GPU Operator's MIG manager DaemonSet pods."""


@dataclass(frozen=True)
class ClusterFacts:
    nodes: list[Obj] = field(default_factory=list)
    """Nodes with either opt-in label (value ``mig``)."""
    agent_pods: list[Obj] = field(default_factory=list)
    mig_manager_pods: list[Obj] = field(default_factory=list)


async def collect(
    kube: Kube,
    agent_namespace: str | None = None,
    agent_selector: str = DEFAULT_AGENT_SELECTOR,
    mig_manager_selector: str = DEFAULT_MIG_MANAGER_SELECTOR,
) -> ClusterFacts:
    """One list per opt-in key (label selectors cannot OR two keys), agent pods, MIG manager pods."""
    *by_key, agents, managers = await asyncio.gather(
        *(kube.list("nodes", label_selector=f"{key}={PARTITIONING_MIG}") for key in PARTITIONING_LABELS),
        kube.list("pods", agent_namespace, label_selector=agent_selector),
        kube.list("pods", None, label_selector=mig_manager_selector),
    )
    nodes: dict[str, Obj] = {}
    for listed in by_key:
        for node in listed:
            nodes.setdefault(node["metadata"]["name"], node)
    return ClusterFacts(nodes=[nodes[n] for n in sorted(nodes)], agent_pods=agents, mig_manager_pods=managers)
