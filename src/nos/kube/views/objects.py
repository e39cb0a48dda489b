"""Typed, read-only views of Kubernetes Nodes and Pods: labels, taints, effective requests, scheduling class.

Built from plain dicts (what the API, ``kubectl -o yaml`` and lightkube's ``to_dict`` give), so the
planner never depends on a client library. Malformed fields raise ``ObjectError`` naming the object.
Plain Kubernetes only: which resources are MIG devices and which pods nos plans for is the contract's
(``nos.contract.pods``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nos.kube.views.quantity import to_int

POD_COUNT = "pods"
"""The allocatable entry that caps how many pods a node runs (kubelet's ``maxPods``)."""


class ObjectError(ValueError):
    """A Node or Pod that cannot be read."""


@dataclass(frozen=True)
class Toleration:
    key: str | None
    operator: str
    value: str | None
    effect: str | None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.key is None:  # empty key with Exists tolerates everything
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or (self.value or "") == (taint.value or "")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str | None
    effect: str


@dataclass(frozen=True)
class Requirement:
    """One node selector requirement (matchExpressions or matchFields entry)."""

    key: str
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class SelectorTerm:
    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class SchedulingClass:
    """Which nodes a pod may go to (nodeSelector, required node affinity, tolerations): shared by
    identical pods, so the nodes that accept a class are worked out once per class."""

    node_selector: tuple[tuple[str, str], ...] = ()
    affinity: tuple[SelectorTerm, ...] | None = None
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    priority: int
    created: str
    node_name: str | None
    phase: str
    requests: Mapping[str, int]
    """Effective requests: max(sum of containers, largest init container) + overhead."""
    scheduling_class: SchedulingClass
    unschedulable: bool = False
    """The scheduler found no node for it (condition PodScheduled=False, reason Unschedulable)."""
    nominated: bool = False
    owner_kinds: tuple[str, ...] = ()

    @cached_property
    def key(self) -> str:
        """``namespace/name``; worked out once (the partitioner asks it of thousands of pods every cycle)."""
        return f"{self.namespace}/{self.name}"

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    allocatable: Mapping[str, int]
    unschedulable: bool = False
    taints: tuple[Taint, ...] = field(default=())


def _resources(obj: Mapping[str, Any] | None, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in (obj or {}).items():
        try:
            out[str(name)] = to_int(str(name), value)
        except ValueError as e:
            raise ObjectError(f"{where}: {name}: {e}") from None
    return out


def container_requests(container: Mapping[str, Any], where: str = "container") -> dict[str, int]:
    """One container's requests; a limit without a request is also the request (as the API defaults it)."""
    res = container.get("resources") or {}
    req = _resources(res.get("limits"), where)
    req.update(_resources(res.get("requests"), where))
    return req


def _requirements(items: Any) -> tuple[Requirement, ...]:
    return tuple(
        Requirement(str(e["key"]), str(e["operator"]), tuple(str(v) for v in e.get("values") or ()))
        for e in items or ()
    )


def _metadata(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    meta = obj.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise ObjectError(f"a {kind} has a metadata that is not a mapping")
    return meta


def pod_from_dict(obj: Mapping[str, Any]) -> PodInfo:
    meta = _metadata(obj, "Pod")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    if not name:
        raise ObjectError("a Pod has no metadata.name")
    where = f"pod {namespace}/{name}"
    try:
        summed: dict[str, int] = {}
        for c in spec.get("containers") or ():
            for r, n in container_requests(c, where).items():
                summed[r] = summed.get(r, 0) + n
        for c in spec.get("initContainers") or ():
            for r, n in container_requests(c, where).items():
                summed[r] = max(summed.get(r, 0), n)
        for r, n in _resources(spec.get("overhead"), where).items():
            summed[r] = summed.get(r, 0) + n
        affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        terms = None
        if affinity is not None:
            terms = tuple(
                SelectorTerm(_requirements(t.get("matchExpressions")), _requirements(t.get("matchFields")))
                for t in affinity.get("nodeSelectorTerms") or ()
            )
        tolerations = tuple(
            Toleration(t.get("key") or None, t.get("operator") or "Equal", t.get("value"), t.get("effect") or None)
            for t in spec.get("tolerations") or ()
        )
        conditions = status.get("conditions") or ()
        unschedulable = any(
            c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
            for c in conditions
        )
        scheduling_class = SchedulingClass(
            tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items())),
            terms,
            tolerations,
        )
        return PodInfo(
            namespace=namespace,
            name=name,
            priority=int(spec.get("priority") or 0),
            created=str(meta.get("creationTimestamp") or ""),
            node_name=spec.get("nodeName") or None,
            phase=str(status.get("phase") or "Pending"),
            requests=summed,
            scheduling_class=scheduling_class,
            unschedulable=unschedulable,
            nominated=bool(status.get("nominatedNodeName")),
            owner_kinds=tuple(str(o.get("kind")) for o in meta.get("ownerReferences") or ()),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        if isinstance(e, ObjectError):
            raise
        raise ObjectError(f"{where}: malformed spec ({e})") from e


def node_from_dict(obj: Mapping[str, Any]) -> NodeInfo:
    meta = _metadata(obj, "Node")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise ObjectError("a Node has no metadata.name")
    try:
        taints = tuple(Taint(str(t["key"]), t.get("value"), str(t["effect"])) for t in spec.get("taints") or ())
        return NodeInfo(
            name=name,
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            allocatable=_resources(status.get("allocatable"), f"node {name}"),
            unschedulable=bool(spec.get("unschedulable")),
            taints=taints,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ObjectError(f"node {name}: malformed spec ({e})") from e
