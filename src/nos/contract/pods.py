"""The contract's pod rules: which resources are MIG devices, what a pod asks for, which pods nos plans.

The Kubernetes views (``nos.kube.views``) read pods as Kubernetes does; the MIG policy on top of
them lives here, next to the rest of the contract: a MIG device is an ``nvidia.com/mig-<profile>``
extended resource, a container can use one whole device, and a candidate is a pod the scheduler
left Pending for lack of MIG devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nos.kube.views.objects import PodInfo, container_requests, pod_from_dict
from nos.kube.views.quantity import parse_quantity
from nos.mig.catalog import MIG_RESOURCE_PREFIX


def is_mig_resource(name: str) -> bool:
    """``nvidia.com/mig-<profile>``: the extended resources nos plans (never read from allocatable)."""
    return name.startswith(MIG_RESOURCE_PREFIX)


def mig_requests(pod: PodInfo) -> dict[str, int]:
    """The pod's MIG resources and how many devices of each it needs."""
    return {r: n for r, n in pod.requests.items() if is_mig_resource(r) and n > 0}


def is_candidate(pod: PodInfo) -> bool:
    """Pending for lack of MIG devices, by the contract's definition."""
    return (
        pod.phase == "Pending"
        and not pod.node_name
        and pod.unschedulable
        and not pod.nominated
        and not {"DaemonSet", "Node"} & set(pod.owner_kinds)
        and bool(mig_requests(pod))
    )


@dataclass(frozen=True)
class CandidatePod(PodInfo):
    """A candidate with the MIG devices it needs, worked out once when it is read."""

    mig_devices: tuple[str, ...] = ()
    """Every MIG device the pod needs, one entry per device, sorted: kube-scheduler's count of
    extended resources (sum over containers, max with each init container, plus overhead).
    All of them must be on one node."""
    mig_problem: str | None = None
    """Why the pod's MIG request is not one nos can serve, if so."""

    @property
    def mig_requests(self) -> dict[str, int]:
        return mig_requests(self)

    @property
    def mig_resource(self) -> str | None:
        """The single MIG resource this pod needs, when it needs exactly one device."""
        mig = self.mig_requests
        return next(iter(mig)) if len(mig) == 1 and next(iter(mig.values())) == 1 else None


def _fractional_mig(container: Mapping[str, Any]) -> str | None:
    """A MIG request that is not a whole number of devices (``500m``): the API server refuses such
    extended resources, so nos does not round it up to one device."""
    res = container.get("resources") or {}
    for part in ("requests", "limits"):
        for name, value in (res.get(part) or {}).items():
            if is_mig_resource(str(name)) and parse_quantity(value) % 1:
                return f"requests {value} {name}: extended resources such as MIG devices are whole numbers"
    return None


def mig_problem(obj: Mapping[str, Any]) -> str | None:
    """Why a pod's MIG request is not one nos can serve (a fraction of a device, or a container
    asking for more than one), or None. ``obj`` must have been read by ``pod_from_dict`` already."""
    for c in (obj.get("spec") or {}).get("containers") or ():
        fraction = _fractional_mig(c)
        if fraction is not None:
            return fraction
        mig = sum(n for r, n in container_requests(c).items() if is_mig_resource(r))
        if mig > 1:
            return (
                f"container {c.get('name')} requests {mig} MIG devices; a container can use one MIG"
                " device (ask for one larger profile)"
            )
    return None


def candidate(pod: PodInfo, obj: Mapping[str, Any]) -> CandidatePod:
    """``pod`` (read from ``obj``) with its MIG devices and problem."""
    devices = tuple(sorted(r for r, n in mig_requests(pod).items() for _ in range(n)))
    return CandidatePod(**vars(pod), mig_devices=devices, mig_problem=mig_problem(obj))


def read_pod(obj: Mapping[str, Any]) -> PodInfo:
    """The view of a Pod object, a ``CandidatePod`` when it is a candidate; ``ObjectError`` when malformed."""
    pod = pod_from_dict(obj)
    return candidate(pod, obj) if is_candidate(pod) else pod
