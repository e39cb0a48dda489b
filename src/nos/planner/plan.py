"""What a planning run decides, and its documented JSON form (``nos plan --json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nos.mig.catalog import MIG_RESOURCE_PREFIX
from nos.mig.layout import Instance


@dataclass
class GpuPlan:
    index: int
    model: str
    current: tuple[Instance, ...]
    planned: tuple[Instance, ...]
    frozen: str | None = None

    @property
    def changed(self) -> bool:
        return {(i.profile, i.start) for i in self.current} != {(i.profile, i.start) for i in self.planned}


@dataclass
class NodePlan:
    name: str
    gpus: list[GpuPlan]
    annotations: dict[str, str]
    """The complete spec annotation set of the node after this plan."""
    write: bool
    """Whether the partitioner must patch the node (its spec annotations differ)."""
    frozen: str | None = None

    @property
    def changed(self) -> bool:
        """The agent will reconfigure this node (and restart its device plugin)."""
        return any(g.changed for g in self.gpus)


@dataclass(frozen=True)
class Device:
    """One MIG device a placed pod gets."""

    gpu: int
    profile: str
    existing: bool


@dataclass(frozen=True)
class Placed:
    pod: str
    node: str
    gpu: int
    profile: str
    existing: bool
    """Served by an instance that already exists (no reconfiguration needed)."""
    extra: tuple[Device, ...] = ()
    """The further devices of a pod that needs several (all on ``node``; the first is gpu/profile)."""

    @property
    def devices(self) -> tuple[Device, ...]:
        return (Device(self.gpu, self.profile, self.existing), *self.extra)


@dataclass(frozen=True)
class Unplaced:
    pod: str
    reason: str


@dataclass(frozen=True)
class Search:
    """How the plan was found."""

    stage: str
    """"greedy" (the greedy passes' plan) or "optimized" (the optimizing stage's)."""
    optimal: bool
    """Proven optimal for the whole objective (pods per priority, then reconfigured nodes and
    destroyed free instances) by the optimizing stage."""
    note: str = ""
    """Why not proven, when it is not."""


@dataclass(frozen=True)
class Share:
    """One MIG resource's standing against its share of the cluster (``nos.planner.shares``)."""

    resource: str
    demand: int
    """Compute slices of its devices in use plus those its pending pods ask for."""
    target: int
    """Devices its share of the cluster's compute slices comes to."""
    have: int
    """Its devices in use plus its pending pods' devices."""
    kept: int
    """Free devices held for it (ranked above every pod; below with an expected mix)."""
    wanted: int
    """Further devices held for it (ranked below every pod)."""

    @property
    def profile(self) -> str:
        return self.resource.removeprefix(MIG_RESOURCE_PREFIX)


@dataclass
class Plan:
    plan_id: str
    nodes: dict[str, NodePlan]
    placed: list[Placed]
    unplaced: list[Unplaced]
    problems: list[str] = field(default_factory=list)
    search: Search | None = None
    held: list[Placed] = field(default_factory=list)
    """Devices the plan keeps or makes for profiles below their share (``pod`` is the hold's key)."""
    shares: list[Share] = field(default_factory=list)

    @property
    def changed_nodes(self) -> list[str]:
        return [n for n, p in self.nodes.items() if p.changed]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable plan. Fixed keys: ``nodes.*.annotations``, ``nodes.*.gpus[].index``,
        ``nodes.*.gpus[].instances[].{profile,start,used}``, ``placed[].{pod,node,gpu}``,
        ``unplaced[].{pod,reason}``; other keys are additions."""
        return {
            "planId": self.plan_id,
            "nodes": {
                name: {
                    "annotations": dict(sorted(node.annotations.items())),
                    "write": node.write,
                    "changed": node.changed,
                    **({"frozen": node.frozen} if node.frozen else {}),
                    "gpus": [
                        {
                            "index": g.index,
                            "model": g.model,
                            "changed": g.changed,
                            **({"frozen": g.frozen} if g.frozen else {}),
                            "current": [_instance(i) for i in g.current],
                            "instances": [_instance(i) for i in g.planned],
                        }
                        for g in node.gpus
                    ],
                }
                for name, node in sorted(self.nodes.items())
            },
            "placed": [
                {
                    "pod": p.pod,
                    "node": p.node,
                    "gpu": p.gpu,
                    "profile": p.profile,
                    "existing": p.existing,
                    "devices": [{"gpu": d.gpu, "profile": d.profile, "existing": d.existing} for d in p.devices],
                }
                for p in self.placed
            ],
            "unplaced": [{"pod": u.pod, "reason": u.reason} for u in self.unplaced],
            "held": [{"node": p.node, "gpu": p.gpu, "profile": p.profile, "existing": p.existing} for p in self.held],
            "shares": [asdict(s) for s in self.shares],
            "problems": list(self.problems),
            **(
                {"search": {"stage": self.search.stage, "optimal": self.search.optimal, "note": self.search.note}}
                if self.search
                else {}
            ),
        }


def _instance(i: Instance) -> dict[str, Any]:
    return {"profile": i.profile, "start": i.start, "used": i.used}
