"""No starvation: aging of pending pods, and a draining GPU reserved for a pod that waited long.

The planner takes candidates by priority, then smaller profiles first, and keeps the plan that runs
the most pods; kube-scheduler binds a device that frees up to the oldest pending pod *of that
device's profile*. Under a sustained backlog both favour whatever already runs: freed capacity goes
back to pods of the same size, and a pod needing a block nobody frees (a 4g.40gb, which only fits at
slot 0 of an A100, or a whole GPU) waits for ever (measured in ``nos simulate``, docs/simulate.md).

Two changes to the planner's *input* (the planner itself is unchanged), both pure functions of the
cluster state and the time, so a restarted partitioner resumes them. Both are **off by default**:
on the shipped trace they did not lower the never-scheduled count and raised mean pending time at
busy and overloaded loads, because of the limit below (figures in docs/simulate.md):

* **Aging**: each candidate's priority becomes the pair (priority, waited // ``step_s``), encoded
  as one integer. Priority classes keep their order; within a class a pod that has waited longer is
  planned first and counts first in the plan's objective. Pods' real priorities (kube-scheduler's
  order) are untouched.
* **Reservation**: a candidate that has waited ``reserve_after_s`` and fits on no GPU next to the
  in-use instances gets one GPU drained for it: the one where the fewest in-use memory slots overlap
  the best placement of its profile, among regions that can drain at all (a region holding an
  in-use instance of a profile other pods wait for cannot: kube-scheduler binds a freed device to
  such a pod at once, before any agent could remove it). That region is taken out of planning (no new instance there;
  free instances in it are dropped from the GPU's spec, so the agent destroys them and nothing new
  lands there), until the in-use instances in it finish and the pod fits. The choice is stable: a
  drained region only gets emptier. At most ``max_reserved_share`` of the GPUs are reserved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from datetime import datetime

from nos.config import FairnessConfig
from nos.contract.pods import CandidatePod
from nos.kube.views.scheduling import node_refusal
from nos.mig.packing import Packer
from nos.planner.cluster import ClusterState, GpuState, NodeState

LEVELS = 1000
"""Age levels per priority class (a pod waiting ``LEVELS * step_s`` or more stays at the top one)."""


def waited(created: str, now: float) -> float:
    """Seconds since ``created`` (an RFC 3339 creationTimestamp); 0 when it cannot be read."""
    try:
        return max(0.0, now - datetime.fromisoformat(created).timestamp())
    except ValueError:
        return 0.0


def effective_priority(priority: int, waited_s: float, step_s: float) -> int:
    return priority * LEVELS + min(int(waited_s // step_s), LEVELS - 1)


@dataclasses.dataclass(frozen=True)
class Reservation:
    pod: str
    node: str
    gpu: int
    start: int
    mask: int
    in_use_slots: int
    """In-use memory slots still overlapping the region."""


def apply(state: ClusterState, now: float, fairness: FairnessConfig, packer: Packer | None = None) -> ClusterState:
    """``state`` with aged priorities and reserved regions (the same state with both off)."""
    if fairness.aging_step_seconds is None and fairness.reserve_after_seconds is None:
        return state
    waits = {p.key: waited(p.created, now) for p in state.candidates}
    candidates = state.candidates
    if fairness.aging_step_seconds is not None:
        step = fairness.aging_step_seconds
        candidates = [
            dataclasses.replace(p, priority=effective_priority(p.priority, waits[p.key], step)) for p in candidates
        ]
    state = dataclasses.replace(state, candidates=candidates)
    if fairness.reserve_after_seconds is not None:
        reservations = reserve(state, waits, fairness, packer or Packer())
        state = with_reservations(state, reservations)
    return state


def reserve(
    state: ClusterState, waits: dict[str, float], fairness: FairnessConfig, packer: Packer
) -> list[Reservation]:
    """Regions to drain, oldest (highest effective priority) waiting pods first."""
    assert fairness.reserve_after_seconds is not None
    gpus = [(name, ns, gs) for name, ns in state.nodes.items() if not ns.frozen for gs in ns.gpus if not gs.frozen]
    limit = max(1, math.floor(fairness.max_reserved_share * len(gpus)))
    waiting = sorted(
        (p for p in state.candidates if waits[p.key] >= fairness.reserve_after_seconds and p.mig_resource),
        key=lambda p: (-p.priority, -waits[p.key], p.key),
    )
    taken: set[tuple[str, int]] = set()
    fits_somewhere: dict[tuple[str, tuple[str, ...]], bool] = {}
    backlog = {p.mig_resource for p in state.candidates if p.mig_resource}
    out: list[Reservation] = []
    for pod in waiting:
        if len(out) >= limit:
            break
        found = _best_region(pod, gpus, taken, fits_somewhere, packer, backlog)
        if found is not None:
            out.append(found)
            taken.add((found.node, found.gpu))
    return out


def _best_region(
    pod: CandidatePod,
    gpus: list[tuple[str, NodeState, GpuState]],
    taken: set[tuple[str, int]],
    fits_somewhere: dict[tuple[str, tuple[str, ...]], bool],
    packer: Packer,
    backlog: set[str],
) -> Reservation | None:
    resource = pod.mig_resource
    assert resource is not None
    best: tuple[tuple[int, int, str, int, int], Reservation] | None = None
    candidates = []
    for name, ns, gs in gpus:
        profile = gs.model.profile_for_resource(resource)
        if profile is None or node_refusal(pod.scheduling_class, ns.info) is not None:
            continue
        candidates.append((name, gs, profile))
    key = (resource, tuple(n for n, _, _ in candidates))
    if key not in fits_somewhere:  # next to the in-use instances only (free ones can be destroyed)
        fits_somewhere[key] = any(packer.feasible(gs.model, gs.used, (p.name,), gs.blocked) for _, gs, p in candidates)
    if fits_somewhere[key]:
        return None  # the planner can place it now; aging puts it first
    for name, gs, profile in candidates:
        if (name, gs.index) in taken:
            continue
        for start in profile.starts:
            mask = profile.mask(start)
            overlapping = [i for i in gs.used if gs.model.profile(i.profile).mask(i.start) & mask]
            # an in-use instance whose profile other pods wait for is taken again the moment it is
            # freed (kube-scheduler binds it at once): a region holding one would never drain
            if any(
                gs.model.profile(i.profile).resource in backlog and gs.model.profile(i.profile).resource != resource
                for i in overlapping
            ):
                continue
            overlap = (mask & gs.blocked).bit_count()
            rank = (overlap, len(gs.used), name, gs.index, start)
            if best is None or rank < best[0]:
                best = (rank, Reservation(pod.key, name, gs.index, start, mask, overlap))
    return None if best is None else best[1]


def with_reservations(state: ClusterState, reservations: list[Reservation]) -> ClusterState:
    """Free instances in each reserved region dropped, its slots blocked for new instances."""
    if not reservations:
        return state
    by_gpu = {(r.node, r.gpu): r for r in reservations}
    nodes = dict(state.nodes)
    for node_name in {r.node for r in reservations}:
        ns = nodes[node_name]
        gpus = []
        for gs in ns.gpus:
            r = by_gpu.get((node_name, gs.index))
            if r is None:
                gpus.append(gs)
                continue
            model = gs.model
            kept = tuple(i for i in gs.instances if i.used or not model.profile(i.profile).mask(i.start) & r.mask)
            gpus.append(dataclasses.replace(gs, instances=kept, blocked=gs.blocked | r.mask))
        nodes[node_name] = dataclasses.replace(ns, gpus=gpus)
    return dataclasses.replace(state, nodes=nodes)


def signature(state: ClusterState) -> Hashable:
    """What of the candidates' aging the plan depends on (a change means planning again)."""
    return tuple(sorted((p.key, p.priority) for p in state.candidates))
