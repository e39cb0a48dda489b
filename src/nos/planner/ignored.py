"""What a plan leaves out without a word otherwise: GPU pods that are not candidates and nos
annotations or labels it does not read, each with the reason (``nos plan``'s "Not considered").

Only objects that look meant for nos are listed: pods that are not bound and ask for GPUs (MIG
devices or whole ``nvidia.com/gpu``), and Nodes with ``nos.nebuly.*`` keys nos does not use. Pure:
takes the same Node and Pod objects as ``build_cluster``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nos.contract.annotations import DOMAIN, PARTITIONING_LABELS, PARTITIONING_MIG
from nos.contract.pods import is_candidate, mig_requests
from nos.kube.views.objects import ObjectError, PodInfo, pod_from_dict

WHOLE_GPU = "nvidia.com/gpu"
_LABEL_DOMAIN = PARTITIONING_LABELS[0].split("/", 1)[0] + "/"  # nos.nebuly.ai/


@dataclass(frozen=True)
class Ignored:
    what: str
    """``pod <ns>/<name>`` or ``node <name>``."""
    reason: str


def _pod_reason(pod: PodInfo) -> str | None:
    if pod.node_name or pod.terminated or pod.phase != "Pending":
        return None
    mig = mig_requests(pod)
    if not mig:
        if pod.requests.get(WHOLE_GPU, 0) > 0:
            return f"requests whole GPUs ({WHOLE_GPU}); nos only plans MIG devices (nvidia.com/mig-<profile>)"
        return None
    if is_candidate(pod):
        return None
    if {"DaemonSet", "Node"} & set(pod.owner_kinds):
        return "a DaemonSet or static pod: it goes to its own node, nos does not plan for it"
    if pod.nominated:
        return "nominated to a node by preemption: the scheduler places it there"
    if not pod.unschedulable:
        return (
            "Pending but without the PodScheduled=False/Unschedulable condition: the scheduler has not "
            "found it unschedulable (yet); nos plans for it once it has"
        )
    return None


def _node_reasons(obj: Mapping[str, Any]) -> list[Ignored]:
    meta = obj.get("metadata") or {}
    if not isinstance(meta, Mapping):
        return []
    name = str(meta.get("name") or "?")
    out: list[Ignored] = []
    labels = meta.get("labels") or {}
    for key in PARTITIONING_LABELS:
        value = labels.get(key) if isinstance(labels, Mapping) else None
        if value is not None and value != PARTITIONING_MIG:
            out.append(Ignored(f"node {name}", f"label {key}={value}: nos manages nodes labelled {key}=mig only"))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, Mapping):
        for key in sorted(map(str, annotations)):
            if key.startswith(_LABEL_DOMAIN):
                out.append(
                    Ignored(
                        f"node {name}",
                        f"annotation {key} ignored: nos annotations are under {DOMAIN} "
                        f"({_LABEL_DOMAIN} is only for the opt-in label)",
                    )
                )
    return out


def not_considered(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> list[Ignored]:
    """Pods and node keys a plan does not consider, with why (malformed objects are reported by
    ``build_cluster`` as problems, not here)."""
    out: list[Ignored] = []
    for node in nodes:
        out.extend(_node_reasons(node))
    for obj in pods:
        try:
            pod = pod_from_dict(obj)
        except ObjectError:
            continue
        reason = _pod_reason(pod)
        if reason is not None:
            out.append(Ignored(f"pod {pod.key}", reason))
    return out
