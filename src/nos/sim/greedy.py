"""The original nos' greedy planner (Go, nebuly-ai/nos), re-implemented as a baseline.

``nos simulate``'s ``greedy`` policy and the benchmarks compare nos with it; production never runs it.

Reproduced from ``internal/partitioning/core/planner.go``, ``core/tracker.go``,
``core/snapshot.go`` and ``pkg/gpu/mig/{gpu,node}.go``:

* **Lacking profiles** are computed once, per pod, against the cluster-wide free MIG devices
  (``SliceTracker``): a pod lacks its profile when no free device of that profile exists anywhere.
  Pods are *not* counted against each other, so five pods and three free devices lack nothing.
  ``lacking="cumulative"`` is a stronger variant: pods that fit existing free devices are bound
  first (as kube-scheduler does before the next batch), then the original runs on the rest, so
  every pod left lacks for real; benchmarks report both.
* Candidates are sorted by priority, then smaller profiles first; candidate nodes (those with a
  free device or a GPU whose geometry is not an allowed one, computed once) are visited once each.
* Per node (``Node.UpdateGeometryFor``), per GPU (``GPU.UpdateGeometryFor``): among the allowed
  geometries that keep the *counts* of used devices, the one providing the most lacking profiles
  (``min(geometry[p] - used[p], lacking[p])`` summed, profiles the GPU already has enough free
  devices of skipped) is applied; the node's remaining lacking counts drop by the GPU's free devices.
  Counts only: whether the geometry is physically reachable around the used devices is never
  checked. Then every candidate is tried on the node (node-level filter: cpu, memory, pods,
  nodeSelector/affinity/taints, a free device of its profile on some GPU, first GPU by index); if
  none fits, the node's geometry is reverted.
* It stops when nothing lacks.

Deliberate deviations, each in the greedy's favour or needed for determinism:

* Go iterates maps (nodes, GPUs, geometries) in random order: here nodes by name, GPUs by index,
  and ties between geometries go to the first allowed one.
* The Go loop retries already-added pods on every later node (a pod may be "added" twice); here
  a pod is added once.
* After the loop, pods that fit free devices are bound (what kube-scheduler does after the plan),
  so the count is the pods that can run once the plan is applied.
* ``+me`` profiles are unknown to the original and never planned.

Allowed geometries: ``geometries`` (the Helm ``knownMigGeometries`` format, parsed by
``nos.mig.geometries``) where it names the model, otherwise the catalog-consistent default: every
*maximal* count multiset reachable on an empty GPU of the model (``enumerate_layouts``), coarse
first. Only maximal ones, like the original's table: a partial geometry in the list would make a
partially filled GPU look "full" to ``HasFreeCapacity`` and could win ties against its supersets.

Since the plan is blind to placement, a GPU's planned counts may be unreachable without moving
in-use instances; ``reachable`` and ``reachable_placed`` tell which, so benchmarks can count only
the pods that would really run. Unreachable GPUs are still planned (placements made up, which the
checker flags): that is the point of the comparison.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from nos.contract.annotations import SPEC_PLAN, encode_spec
from nos.contract.pods import CandidatePod, is_mig_resource
from nos.kube.views.objects import POD_COUNT
from nos.kube.views.scheduling import insufficient, node_refusal
from nos.mig.catalog import MIG_RESOURCE_PREFIX, Catalog, GpuModel, default_catalog
from nos.mig.geometries import supported_geometries
from nos.mig.layout import Instance, layout_errors, occupied_mask
from nos.mig.packing import Geometry
from nos.mig.placement import fits_counts, groups_of, placements, reachable_counts, search_order
from nos.planner.cluster import ClusterState, GpuState, NodeState, build_cluster
from nos.planner.plan import GpuPlan, NodePlan, Placed, Plan, Unplaced

Lacking = Literal["original", "cumulative"]
_Counts = tuple[tuple[str, int], ...]
"""A geometry as a sorted tuple of (profile, count), hashable."""


# ----------------------------------------------------------------------------- geometries


def default_geometries(model: GpuModel) -> tuple[_Counts, ...]:
    """Maximal count multisets (no variant such as ``+me``) reachable on an empty GPU of ``model``,
    coarse first: ``nos.mig.geometries.supported_geometries``, the chart's default."""
    return supported_geometries(model)


def _allowed(model: GpuModel, geometries: Mapping[str, Sequence[Geometry]] | None) -> tuple[_Counts, ...]:
    if geometries is not None and model.name in geometries:
        return tuple(tuple(sorted((p, n) for p, n in g.items() if n > 0)) for g in geometries[model.name])
    return default_geometries(model)


# ----------------------------------------------------------------------------- reachability


def reachable(model: GpuModel, used: Iterable[Instance], counts: Mapping[str, int]) -> bool:
    """Whether a GPU whose in-use instances are ``used`` can get the profile ``counts`` with those
    instances left where they are (every free instance may be destroyed)."""
    key: _Counts = tuple(sorted((p, n) for p, n in counts.items() if n > 0))
    return key in reachable_counts(model, tuple(sorted(i.freed() for i in used)))


def reachable_gpus(state: ClusterState, plan: Plan) -> set[tuple[str, int]]:
    """(node, GPU index) of every GPU whose planned layout is reachable from its current one."""
    out: set[tuple[str, int]] = set()
    for name, node_plan in plan.nodes.items():
        ns = state.nodes.get(name)
        if ns is None or ns.model is None:
            continue
        current = {g.index: g for g in ns.gpus}
        for g in node_plan.gpus:
            gs = current.get(g.index)
            if gs is None:
                continue
            planned_at = {(i.profile, i.start) for i in g.planned}
            kept = all((u.profile, u.start) in planned_at for u in gs.used)
            if not g.changed or (
                kept and not layout_errors(ns.model, g.planned) and reachable(ns.model, gs.used, _counts(g.planned))
            ):
                out.add((name, g.index))
    return out


def reachable_placed(state: ClusterState, plan: Plan) -> int:
    """Placed pods whose GPU's planned layout is reachable: the pods that would really run."""
    ok = reachable_gpus(state, plan)
    return sum(1 for p in plan.placed if (p.node, p.gpu) in ok)


def _counts(instances: Iterable[Instance]) -> Counter[str]:
    return Counter(i.profile for i in instances)


# ----------------------------------------------------------------------------- working state


@dataclass
class _Gpu:
    state: GpuState
    allowed: tuple[_Counts, ...]
    used: Counter[str]
    free: Counter[str]

    def geometry(self) -> Counter[str]:
        return +(self.used + self.free)

    def can_apply(self, geometry: Mapping[str, int]) -> bool:
        return all(geometry.get(p, 0) >= n for p, n in self.used.items())

    def update_geometry_for(self, required: Mapping[str, int]) -> bool:
        """``GPU.UpdateGeometryFor``: apply the allowed geometry providing the most required profiles."""
        best: dict[str, int] | None = None
        best_score = 0
        for candidate in self.allowed:
            geometry = dict(candidate)
            if not self.can_apply(geometry):
                continue
            score = 0
            for profile, quantity in required.items():
                if self.free[profile] >= quantity:
                    continue
                score += max(0, min(geometry.get(profile, 0) - self.used[profile], quantity))
            if score > best_score:
                best, best_score = geometry, score
        if best is None:
            return False
        self.free = Counter({p: n - self.used[p] for p, n in best.items() if n - self.used[p] > 0})
        return True


@dataclass
class _Node:
    state: NodeState
    gpus: list[_Gpu]
    free: dict[str, int]
    changed_gpus: set[int] = field(default_factory=set)

    def has_free_capacity(self) -> bool:
        """``Node.HasFreeCapacity``: a free device, or a GPU outside the allowed geometries."""
        for g in self.gpus:
            if +g.free:
                return True
            if tuple(sorted(g.geometry().items())) not in g.allowed:
                return True
        return False

    def free_devices(self, profile: str) -> int:
        return sum(g.free[profile] for g in self.gpus)

    def free_counts(self) -> Counter[str]:
        """``free_devices`` of every profile."""
        free: Counter[str] = Counter()
        for g in self.gpus:
            free.update(g.free)
        return free

    def update_geometry_for(self, lacking: Mapping[str, int]) -> bool:
        """``Node.UpdateGeometryFor``."""
        required = {p: n for p, n in lacking.items() if n > 0}
        if not self.gpus or not required:
            return False
        updated = False
        for g in self.gpus:
            if g.update_geometry_for(required):
                updated = True
                self.changed_gpus.add(g.state.index)
            for profile, quantity in g.free.items():
                if profile in required:
                    required[profile] -= quantity
                    if required[profile] <= 0:
                        del required[profile]
        return updated

    def snapshot(self) -> list[Counter[str]]:
        return [Counter(g.free) for g in self.gpus]

    def restore(self, saved: list[Counter[str]], changed: set[int]) -> None:
        for g, free in zip(self.gpus, saved, strict=True):
            g.free = free
        self.changed_gpus = changed


def _profile_of(pod: CandidatePod) -> str | None:
    resource = pod.mig_resource
    return resource[len(MIG_RESOURCE_PREFIX) :] if resource and not pod.mig_problem else None


def _order(pod: CandidatePod) -> tuple[Any, ...]:
    """Priority first, then smaller profiles (``Profile.SmallerThan``: fewer compute slices, then
    less memory), then creation, then name (Go's stable sort keeps list order; ours is explicit)."""
    profile = _profile_of(pod) or ""
    try:
        compute, memory = profile.split("g.", 1)
        size = (int(compute), int(memory.rstrip("gb")))
    except ValueError:
        size = (99, 999)
    return (-pod.priority, size, pod.created, pod.key)


class _Greedy:
    def __init__(self, state: ClusterState, geometries: Mapping[str, Sequence[Geometry]] | None) -> None:
        self.state = state
        self.nodes: list[_Node] = []
        for ns in state.nodes.values():  # sorted by name by build_cluster
            if ns.frozen or ns.model is None:
                continue
            allowed = _allowed(ns.model, geometries)
            gpus = [
                _Gpu(gs, allowed, _counts(gs.used), _counts(gs.free))
                for gs in sorted(ns.gpus, key=lambda g: g.index)
                if not gs.frozen
            ]
            self.nodes.append(_Node(ns, gpus, dict(ns.free)))
        self.placed: dict[str, Placed] = {}

    def free_counts(self) -> Counter[str]:
        """Free devices per profile in the cluster."""
        free: Counter[str] = Counter()
        for node in self.nodes:
            free.update(node.free_counts())
        return free

    def lacking(self, pods: Sequence[tuple[CandidatePod, str | None]]) -> tuple[Counter[str], dict[str, str]]:
        """``SliceTracker``: per pod, its profile when no free device of it exists in the cluster."""
        available = self.free_counts()
        total: Counter[str] = Counter()
        per_pod: dict[str, str] = {}
        for pod, profile in pods:
            if profile is None or pod.key in self.placed or available[profile] >= 1:
                continue
            total[profile] += 1
            per_pod[pod.key] = profile
        return total, per_pod

    def bind_free(self, pods: Sequence[tuple[CandidatePod, str | None]]) -> None:
        """What kube-scheduler does: pods in order onto free devices, nodes by name. A pod whose
        profile has no free device on any node is passed over at once (every node would refuse it)."""
        free = self.free_counts()
        for pod, profile in pods:
            if profile is None or free[profile] < 1 or pod.key in self.placed:
                continue
            for node in self.nodes:
                if self.try_add(pod, profile, node):
                    free[profile] -= 1
                    break

    def try_add(self, pod: CandidatePod, profile: str, node: _Node) -> bool:
        if node.free_devices(profile) < 1:
            return False
        if node_refusal(pod.scheduling_class, node.state.info) is not None:
            return False
        requests = {r: n for r, n in pod.requests.items() if not is_mig_resource(r)}
        if insufficient(requests, node.free):
            return False
        gpu = next(g for g in node.gpus if g.free[profile] >= 1)
        gpu.free[profile] -= 1
        gpu.used[profile] += 1
        for r, n in requests.items():
            if n > 0:
                node.free[r] = node.free.get(r, 0) - n
        node.free[POD_COUNT] = node.free.get(POD_COUNT, 0) - 1
        existing = gpu.state.index not in node.changed_gpus
        self.placed[pod.key] = Placed(pod.key, node.state.name, gpu.state.index, profile, existing)
        return True

    def run(self, mode: Lacking) -> None:
        ordered = sorted(self.state.candidates, key=_order)
        pods = [(pod, _profile_of(pod)) for pod in ordered]  # each pod's profile, worked out once
        if mode == "cumulative":
            self.bind_free(pods)
        lacking, per_pod = self.lacking(pods)
        candidates = [n for n in self.nodes if n.has_free_capacity()]
        for node in candidates:
            if not +lacking:
                break
            saved, changed = node.snapshot(), set(node.changed_gpus)
            node.update_geometry_for(lacking)
            free = node.free_counts()  # this node's free devices, as ``try_add`` counts them
            added = 0
            for pod, profile in pods:
                if profile is None or free[profile] < 1 or pod.key in self.placed:
                    continue
                if self.try_add(pod, profile, node):
                    free[profile] -= 1
                    added += 1
                    if pod.key in per_pod:
                        lacking[per_pod.pop(pod.key)] -= 1
            if added == 0:
                node.restore(saved, changed)
        self.bind_free(pods)  # after the plan, kube-scheduler binds what fits the devices planned

    # ------------------------------------------------------------------ result

    def finish(self, plan_id: str | None) -> Plan:
        working = {n.state.name: n for n in self.nodes}
        node_plans: dict[str, NodePlan] = {}
        for name, ns in self.state.nodes.items():
            node = working.get(name)
            current_spec = ns.current_spec_annotations
            if node is None:
                gpus = [GpuPlan(g.index, g.model.name, g.instances, g.instances, g.frozen) for g in ns.gpus]
                node_plans[name] = NodePlan(name, gpus, dict(current_spec), False, ns.frozen or "unknown GPU model")
                continue
            by_index = {g.state.index: g for g in node.gpus}
            gpu_plans = []
            for gs in ns.gpus:
                g = by_index.get(gs.index)
                if g is None or gs.index not in node.changed_gpus:
                    gpu_plans.append(GpuPlan(gs.index, gs.model.name, gs.instances, gs.instances, gs.frozen))
                    continue
                target = g.geometry()
                planned = gs.instances if target == +_counts(gs.instances) else _materialize(gs, target)
                gpu_plans.append(GpuPlan(gs.index, gs.model.name, gs.instances, planned))
            desired = encode_spec({g.index: [i.freed() for i in g.planned] for g in gpu_plans}, None)
            current_no_plan = {k: v for k, v in current_spec.items() if k != SPEC_PLAN}
            write = desired != current_no_plan
            node_plans[name] = NodePlan(name, gpu_plans, desired if write else dict(current_spec), write)
        if plan_id is None:
            blob = json.dumps({n: p.annotations for n, p in sorted(node_plans.items()) if p.write}, sort_keys=True)
            plan_id = "greedy-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
        for p in node_plans.values():
            if p.write:
                p.annotations[SPEC_PLAN] = plan_id
        order = {pod.key: i for i, pod in enumerate(sorted(self.state.candidates, key=_order))}
        placed = sorted(self.placed.values(), key=lambda p: order[p.pod])
        unplaced = [
            Unplaced(pod.key, pod.mig_problem or "the original greedy found no place")
            for pod in sorted(self.state.candidates, key=_order)
            if pod.key not in self.placed
        ]
        return Plan(plan_id, node_plans, placed, unplaced, list(self.state.problems))


def _materialize(gs: GpuState, target: Counter[str]) -> tuple[Instance, ...]:
    """Placements for the planned counts: used instances where they are, existing free ones kept
    where possible. When no placement exists (the greedy is blind to placement) the missing
    instances are put at their first allowed start, overlapping: the layout the original would
    ask for, which no GPU can take."""
    found = _place(gs.model, tuple(sorted(gs.used)), tuple(sorted(gs.free)), _counts_key(target - _counts(gs.used)))
    if found is not None:
        return found
    rest = target - _counts(gs.used)
    made_up = [Instance(gs.model.profile(p).starts[0], p) for p in sorted(rest.elements())]
    return tuple(sorted((*gs.used, *made_up)))


def _counts_key(c: Counter[str]) -> _Counts:
    return tuple(sorted((p, n) for p, n in c.items() if n > 0))


@cache
def _place(
    model: GpuModel, used: tuple[Instance, ...], free: tuple[Instance, ...], rest: _Counts
) -> tuple[Instance, ...] | None:
    """The rest's placement around the used instances that a walk trying the existing free
    instances' starts first would find first: the smallest by (not an existing free instance, start)
    per instance, largest profiles first; None when none exists."""
    wanted = search_order(model.profile(p) for p, n in rest for _ in range(n))
    if layout_errors(model, used) or not fits_counts(model, [*(model.profile(i.profile) for i in used), *wanted]):
        return None
    prefer = {(i.profile, i.start) for i in free}
    best = min(
        (placed for _, placed in placements(model, occupied_mask(model, used), groups_of(wanted))),
        key=lambda placed: tuple(((p.name, s) not in prefer, s) for p, s in placed),
        default=None,
    )
    if best is None:
        return None
    return tuple(sorted((*used, *(Instance(s, p.name) for p, s in best))))


# ----------------------------------------------------------------------------- entry points


def plan_greedy_state(
    state: ClusterState,
    *,
    geometries: Mapping[str, Sequence[Geometry]] | None = None,
    plan_id: str | None = None,
    lacking: Lacking = "original",
) -> Plan:
    """The original greedy on an already built cluster state (see ``plan_greedy``)."""
    work = _Greedy(state, geometries)
    work.run(lacking)
    return work.finish(plan_id)


def plan_greedy(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    catalog: Catalog | None = None,
    geometries: Mapping[str, Sequence[Geometry]] | None = None,
    plan_id: str | None = None,
    lacking: Lacking = "original",
) -> Plan:
    """What the original nos would plan for these Nodes and Pods (same ``Plan`` type as ``nos``'
    planner). Its layouts may be physically unreachable: see ``reachable_placed``."""
    state = build_cluster(nodes, pods, catalog or default_catalog())
    return plan_greedy_state(state, geometries=geometries, plan_id=plan_id, lacking=lacking)
