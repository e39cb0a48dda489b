"""The planner: which MIG layout each GPU should get so that the most pending pods can run.

Pods are taken in the contract's order (priority, then smaller profiles first). Each goes to the
cheapest option that works, by tiers:

0. a free instance of its profile that already exists (nothing to change);
1. a new instance on a node this plan already reconfigures (no extra device-plugin restart);
2. a new instance on another node.

Within a tier the GPU where the pod fits most tightly wins (best fit), which keeps large free
blocks elsewhere for later, larger pods. Unlike the original greedy, a GPU's new instances are not
placed one by one: every feasibility question is answered by an exact search over all placements
of the GPU's new instances around its fixed ones (``nos.mig.packing``), so no early placement
choice ever blocks a later pod, and in-use instances are never moved.

GPUs that look alike (same model, fixed instances and planned additions) share a bucket; a heap
per MIG resource orders buckets by (tier, fit), so each pod inspects few GPUs even at thousands of
nodes.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nos.config import PLAN_BUDGET_SECONDS, PROFILE_SHARES
from nos.contract.annotations import SPEC_PLACEMENT_PREFIX, SPEC_PLAN, SPEC_PREFIX, encode_spec
from nos.contract.pods import CandidatePod, is_mig_resource
from nos.kube.views.objects import POD_COUNT, SchedulingClass
from nos.kube.views.scheduling import insufficient, node_refusal
from nos.mig.catalog import Catalog, GpuModel, default_catalog
from nos.mig.layout import Instance
from nos.mig.packing import Geometry, Packer
from nos.planner import bound, lns, shares
from nos.planner.cluster import ClusterState, GpuState, NodeState, build_cluster
from nos.planner.eligibility import Eligibility
from nos.planner.plan import Device, GpuPlan, NodePlan, Placed, Plan, Search, Unplaced

_UNKNOWN_SIZE = (99, 999)
"""The size of a resource no catalog model offers: after every real profile."""


def profile_size(catalog: Catalog, resource: str) -> tuple[int, int]:
    """(compute slices, memory GB) of the profile a MIG resource serves, from the catalog."""
    return catalog.resource_size(resource) or _UNKNOWN_SIZE


def candidate_order(pod: CandidatePod, catalog: Catalog) -> tuple[Any, ...]:
    """The contract's order: higher priority first, then smaller profiles (a pod with several
    devices by its largest), then oldest."""
    size = max((profile_size(catalog, r) for r in pod.mig_requests), default=_UNKNOWN_SIZE)
    return (-pod.priority, size, pod.created, pod.key)


class _HeapEntry(NamedTuple):
    """A bucket of alike GPUs in a MIG resource's heap; compared field by field, so the heap pops
    the lowest tier, then the tightest fit (least free-space quality left), first."""

    tier: int
    quality: int
    """Free-space quality the bucket's GPUs keep after one more instance of the resource."""
    bucket_id: int
    """Stale when it no longer matches ``bucket_ids[key]`` (the bucket emptied since)."""
    key: tuple[Any, ...]


@dataclass
class _Fit:
    """Where the devices of one pod would go on one node."""

    node: _Node
    devices: list[tuple[_Gpu, str, Instance | None]]
    """(GPU, MIG resource, existing free instance claimed or None for a new instance)."""
    quality: int

    @property
    def tier(self) -> int:
        if all(existing is not None for _, _, existing in self.devices):
            return 0
        return 1 if self.node.changed else 2


@dataclass(eq=False)
class _Gpu:
    id: int
    node: _Node
    state: GpuState
    fixed: tuple[Instance, ...]
    soft: list[Instance]
    wanted: tuple[str, ...] = ()
    key: tuple[Any, ...] | None = None
    claimable: dict[str, list[Instance]] = field(default_factory=dict)
    """Unclaimed free instances by the resource they serve, plain before ``+me``, by start."""
    added: dict[str, int] | None = None
    """Free-space quality after adding one new instance per resource that fits (``Packer.additions``);
    None until asked, and again whenever the GPU changes."""

    @property
    def model(self) -> GpuModel:
        return self.state.model


@dataclass(eq=False)
class _Node:
    id: int
    state: NodeState
    free: dict[str, int]
    gpus: list[_Gpu] = field(default_factory=list)
    changed: bool = False
    full: bool = False
    """No candidate of this round fits its free cpu/memory/pods any more: out of every index."""
    best: dict[str, tuple[int, _Gpu] | None] | None = None
    """Per resource, (quality, GPU) of its best-fitting GPU for one more instance, or None; reset
    whenever one of its GPUs changes."""


@dataclass(frozen=True)
class Strategy:
    """One way to run the greedy pass; the planner runs several and keeps the best plan."""

    large_first: bool = False
    """Within a priority, larger profiles first (first-fit decreasing) instead of the contract's smaller first."""
    claim_by_fit: bool = False
    """Take an existing free instance only if no new instance fits more tightly elsewhere; otherwise
    existing free instances always win (no reconfiguration)."""

    def order(self, pod: CandidatePod, catalog: Catalog) -> tuple[Any, ...]:
        key = candidate_order(pod, catalog)
        if self.large_first:
            compute, memory = key[1]
            return (key[0], (-compute, -memory), *key[2:])
        return key


STRATEGIES = (Strategy(large_first=True, claim_by_fit=True), Strategy(large_first=True), Strategy())
"""Tried in this order while the time budget allows (a 1,000-node cluster may get only the first);
an earlier one wins ties. Large-first packs better when capacity is short; claiming an existing
free instance only when no new instance fits more tightly stops small pods from taking the free
instances of the only GPU a large pod could use (together the best single pass at 1,000 nodes);
small-first follows the original nos (see docs/benchmarks.md)."""


class _Planning:
    """One planning run: mutable working state over an immutable ClusterState."""

    def __init__(
        self,
        state: ClusterState,
        packer: Packer,
        strategy: Strategy = STRATEGIES[0],
        eligibility: Eligibility | None = None,
    ) -> None:
        self.state = state
        self.packer = packer
        self.strategy = strategy
        self.eligibility = eligibility or Eligibility([ns.info for ns in state.nodes.values()])
        self.nodes: list[_Node] = []
        self.gpus: list[_Gpu] = []
        self.buckets: dict[tuple[Any, ...], dict[int, None]] = {}
        self.bucket_ids: dict[tuple[Any, ...], int] = {}
        self.heaps: dict[str, list[_HeapEntry]] = {}
        self.soft_index: dict[str, dict[int, None]] = {}
        self.classes: dict[SchedulingClass, set[int]] = {}
        self.failed: set[tuple[Any, ...]] = set()
        self.reasons: dict[tuple[Any, ...], str] = {}
        """Why pods of a failed signature found no place, worked out once per pass (thousands of
        pending pods share few signatures)."""
        self.offering: dict[tuple[str, ...], list[_Node]] = {}
        # the nodes a class may go to, full ones included (``classes`` forgets full nodes)
        self.accepting: dict[SchedulingClass, frozenset[int]] = {}
        self.placed: list[Placed] = []
        self.unplaced: list[Unplaced] = []
        self.offered: dict[str, set[str]] = {}
        self.least: dict[str, int] = {}
        """The smallest request of any candidate per node resource (pods: 1)."""
        for pod in state.candidates:
            for r in (POD_COUNT, *self.least, *pod.requests):
                if not is_mig_resource(r):
                    self.least[r] = min(self.least.get(r, 1 << 62), 1 if r == POD_COUNT else pod.requests.get(r, 0))
        self.devices_of: dict[str, tuple[str, list[tuple[int, str, Instance | None]]]] = {}
        """Placed pods' devices: (GPU index, MIG resource, existing free instance claimed or None)."""
        for ns in state.nodes.values():
            node = _Node(len(self.nodes), ns, dict(ns.free))
            self.nodes.append(node)
            if ns.frozen or ns.model is None:
                continue
            for r in ns.model.by_resource:
                self.offered.setdefault(r, set()).add(ns.model.name)
            # a GPU without instances gets its initial layout anyway: its node changes regardless
            node.changed = any(not gs.instances and not gs.frozen for gs in ns.gpus)
            for gs in ns.gpus:
                if gs.frozen:
                    continue
                gpu = _Gpu(len(self.gpus), node, gs, gs.used, list(gs.free))
                self.gpus.append(gpu)
                node.gpus.append(gpu)
                self._index(gpu)
                for inst in sorted(gpu.soft, key=lambda i: (gs.model.profile(i.profile).media, i.start)):
                    resource = gs.model.profile(inst.profile).resource
                    gpu.claimable.setdefault(resource, []).append(inst)
                    self.soft_index.setdefault(resource, {})[gpu.id] = None

    # ------------------------------------------------------------------ buckets

    def _index(self, gpu: _Gpu) -> None:
        if gpu.node.full:
            return
        key = (gpu.model.name, gpu.fixed, gpu.state.blocked, gpu.wanted, gpu.node.changed)
        gpu.key = key
        gpu.added = None
        gpu.node.best = None
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = {}
            bid = self.bucket_ids[key] = len(self.bucket_ids)
            tier = 1 if gpu.node.changed else 2
            for resource, q in self._additions(gpu).items():
                # lowest quality left first: best fit, large free blocks stay elsewhere
                heapq.heappush(self.heaps.setdefault(resource, []), _HeapEntry(tier, q, bid, key))
        bucket[gpu.id] = None

    def _unindex(self, gpu: _Gpu) -> None:
        if gpu.key is None or gpu.id not in self.buckets.get(gpu.key, {}):
            return
        bucket = self.buckets[gpu.key]
        del bucket[gpu.id]
        if not bucket:
            del self.buckets[gpu.key]
            del self.bucket_ids[gpu.key]

    # ------------------------------------------------------------------ pods

    def _eligible(self, scheduling_class: SchedulingClass) -> set[int]:
        """Nodes a pod of this scheduling class may go to (cached: classes are few)."""
        eligible = self.classes.get(scheduling_class)
        if eligible is None:
            nodes = self.nodes
            eligible = self.classes[scheduling_class] = {
                i for i in self.eligibility.of(scheduling_class) if not nodes[i].state.frozen and nodes[i].state.model
            }
            self.accepting[scheduling_class] = frozenset(eligible)
        return eligible

    @staticmethod
    def _fits(node: _Node, requests: Sequence[tuple[str, int]]) -> bool:
        free = node.free
        if free.get(POD_COUNT, 0) < 1:
            return False
        return all(free.get(r, 0) >= n for r, n in requests)

    def place(self, pod: CandidatePod) -> None:
        if pod.mig_problem:
            self.unplaced.append(Unplaced(pod.key, pod.mig_problem))
            return
        devices = pod.mig_devices
        missing = sorted({r for r in devices if r not in self.offered})
        if missing:
            models = sorted({m for ms in self.offered.values() for m in ms})
            have = f" (managed GPU models: {', '.join(models)})" if models else " (no managed MIG node)"
            self.unplaced.append(Unplaced(pod.key, f"no GPU model in the cluster offers {missing[0]}{have}"))
            return
        requests = tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
        eligible = self._eligible(pod.scheduling_class)
        if len(devices) > 1:
            self._place_several(pod, devices, eligible, requests)
            return
        resource = devices[0]
        signature = (resource, pod.scheduling_class, requests)
        if signature not in self.failed:
            gpu, existing, claim_quality = self._claim(resource, eligible, requests)
            if gpu is None or self.strategy.claim_by_fit:
                new, new_quality = self._new(resource, eligible, requests)
                if new is not None and (gpu is None or new_quality < claim_quality):
                    gpu, existing = new, None
            if gpu is not None:
                self._commit(pod, gpu.node, [(gpu, resource, existing)], requests)
                return
            self.failed.add(signature)
        self._unplaced(pod, signature, devices, eligible, requests)

    def _unplaced(
        self,
        pod: CandidatePod,
        signature: tuple[Any, ...],
        devices: tuple[str, ...],
        eligible: set[int],
        requests: Sequence[tuple[str, int]],
    ) -> None:
        reason = self.reasons.get(signature)
        if reason is None:
            reason = self.reasons[signature] = self._reason(devices, pod.scheduling_class, eligible, requests)
        self.unplaced.append(Unplaced(pod.key, reason))

    def _place_several(
        self, pod: CandidatePod, devices: tuple[str, ...], eligible: set[int], requests: Sequence[tuple[str, int]]
    ) -> None:
        """A pod with several MIG devices: all on one node (any of its GPUs), or none."""
        signature = (devices, pod.scheduling_class, requests)
        if signature not in self.failed:
            largest_first = sorted(devices, key=lambda r: profile_size(self.state.catalog, r), reverse=True)
            fit = self._find_node(largest_first, eligible, requests)
            if fit is not None:
                self._commit(pod, fit.node, fit.devices, requests)
                return
            self.failed.add(signature)
        self._unplaced(pod, signature, devices, eligible, requests)

    def _find_node(self, devices: list[str], eligible: set[int], requests: Sequence[tuple[str, int]]) -> _Fit | None:
        """The node for a pod with several devices: one where all are existing free instances if
        any, else the first in the largest device's (tier, fit) order where all fit."""
        seen: set[int] = set()
        best: _Fit | None = None

        def consider(node: _Node) -> _Fit | None:
            if node.id in seen:
                return None
            seen.add(node.id)
            if node.id not in eligible or not self._fits(node, requests):
                return None
            return self._fit_node(node, devices)

        for gid in self.soft_index.get(devices[0], {}):
            fit = consider(self.gpus[gid].node)
            if fit is not None and (best is None or (fit.tier, fit.quality) < (best.tier, best.quality)):
                best = fit
                if fit.tier == 0:
                    return fit
        heap = self.heaps.get(devices[0], [])
        popped = []
        found: _Fit | None = None
        while heap and found is None:
            entry = heapq.heappop(heap)
            if self.bucket_ids.get(entry.key) != entry.bucket_id:
                continue  # stale: the bucket emptied since
            popped.append(entry)
            for gid in self.buckets[entry.key]:
                found = consider(self.gpus[gid].node)
                if found is not None:
                    break
        for entry in popped:
            heapq.heappush(heap, entry)
        if found is not None and (best is None or (found.tier, found.quality) < (best.tier, best.quality)):
            best = found
        return best

    def _fit_node(self, node: _Node, devices: Sequence[str]) -> _Fit | None:
        """Devices (largest first) onto the node's GPUs one by one: an existing free instance when
        one can be claimed, else a new instance on the GPU it fits most tightly. None when one
        does not fit."""
        fixed = {g.id: g.fixed for g in node.gpus}
        wanted = {g.id: g.wanted for g in node.gpus}
        quality: dict[int, int] = {}
        claimed: set[tuple[int, Instance]] = set()
        out: list[tuple[_Gpu, str, Instance | None]] = []
        for resource in devices:
            choice: tuple[_Gpu, Instance | None, int] | None = None
            for gpu in node.gpus:
                for inst in gpu.claimable.get(resource, ()):
                    if (gpu.id, inst) in claimed:
                        continue
                    trial = tuple(sorted((*fixed[gpu.id], inst)))
                    q = self.packer.quality(gpu.model, trial, wanted[gpu.id], gpu.state.blocked)
                    if q is not None:
                        choice = (gpu, inst, q)
                        break
                if choice is not None:
                    break
            if choice is None:
                for gpu in node.gpus:
                    profile = gpu.model.profile_for_resource(resource)
                    if profile is None:
                        continue
                    trial_wanted = tuple(sorted((*wanted[gpu.id], profile.name)))
                    q = self.packer.quality(gpu.model, fixed[gpu.id], trial_wanted, gpu.state.blocked)
                    if q is not None and (choice is None or q < choice[2]):
                        choice = (gpu, None, q)
            if choice is None:
                return None
            gpu, claim, q = choice
            if claim is not None:
                claimed.add((gpu.id, claim))
                fixed[gpu.id] = tuple(sorted((*fixed[gpu.id], claim)))
            else:
                p = gpu.model.profile_for_resource(resource)
                assert p is not None
                wanted[gpu.id] = tuple(sorted((*wanted[gpu.id], p.name)))
            quality[gpu.id] = q
            out.append((gpu, resource, claim))
        return _Fit(node, out, sum(quality.values()))

    def _claim(
        self, resource: str, eligible: set[int], requests: Sequence[tuple[str, int]]
    ) -> tuple[_Gpu | None, Instance | None, int]:
        """Tier 0: an existing free instance serving ``resource``, and the free-space quality its GPU keeps.

        A GPU where no such instance can be claimed any more is dropped from the index: during a pass
        GPUs only gain instances, so what does not fit now never will."""
        index = self.soft_index.get(resource, {})
        found: tuple[_Gpu | None, Instance | None, int] = (None, None, 0)
        dead = []
        for gid in index:
            gpu = self.gpus[gid]
            if gpu.node.id not in eligible or not self._fits(gpu.node, requests):
                continue
            for inst in gpu.claimable[resource]:
                fixed = tuple(sorted((*gpu.fixed, inst)))
                q = self.packer.quality(gpu.model, fixed, gpu.wanted, gpu.state.blocked)
                if q is not None:
                    found = (gpu, inst, q)
                    break
            if found[0] is not None:
                break
            dead.append(gid)
        for gid in dead:
            del index[gid]
        return found

    def _new(self, resource: str, eligible: set[int], requests: Sequence[tuple[str, int]]) -> tuple[_Gpu | None, int]:
        """Tiers 1 and 2: a new instance on the best-fitting GPU, and the free-space quality it leaves."""
        if len(eligible) * 8 < len(self.buckets):
            return self._new_direct(resource, eligible, requests)
        heap = self.heaps.get(resource, [])
        popped = []
        found: tuple[_Gpu | None, int] = (None, 0)
        while heap and found[0] is None:
            entry = heapq.heappop(heap)
            key = entry.key
            if self.bucket_ids.get(key) != entry.bucket_id:
                continue  # stale: the bucket emptied since
            popped.append(entry)
            for gid in self.buckets[key]:
                gpu = self.gpus[gid]
                if gpu.node.id in eligible and self._fits(gpu.node, requests):
                    found = (gpu, entry.quality)
                    break
        for entry in popped:
            heapq.heappush(heap, entry)
        return found

    def _new_direct(
        self, resource: str, eligible: set[int], requests: Sequence[tuple[str, int]]
    ) -> tuple[_Gpu | None, int]:
        """For pods only a few nodes accept: look at those nodes' GPUs directly."""
        best: tuple[int, int, int] | None = None
        found: tuple[_Gpu | None, int] = (None, 0)
        for nid in sorted(eligible):
            node = self.nodes[nid]
            if node.best is None:
                node.best = {}
            if resource in node.best:
                hit = node.best[resource]
            else:  # the node's best-fitting GPU for one more instance of this resource
                hit = None
                for gpu in node.gpus:
                    q = self._added_quality(gpu, resource)
                    if q is not None and (hit is None or (q, gpu.id) < (hit[0], hit[1].id)):
                        hit = (q, gpu)
                node.best[resource] = hit
            if hit is None or not self._fits(node, requests):
                continue
            rank = (1 if node.changed else 2, hit[0], hit[1].id)
            if best is None or rank < best:
                best, found = rank, (hit[1], hit[0])
        return found

    def _additions(self, gpu: _Gpu) -> dict[str, int]:
        if gpu.added is None:
            gpu.added = self.packer.additions(gpu.model, gpu.fixed, gpu.wanted, gpu.state.blocked)
        return gpu.added

    def _added_quality(self, gpu: _Gpu, resource: str) -> int | None:
        return self._additions(gpu).get(resource)

    def _commit(
        self,
        pod: CandidatePod,
        node: _Node,
        devices: Sequence[tuple[_Gpu, str, Instance | None]],
        requests: Sequence[tuple[str, int]],
    ) -> None:
        for r, n in requests:
            node.free[r] = node.free.get(r, 0) - n
        node.free[POD_COUNT] = node.free.get(POD_COUNT, 0) - 1
        got = [self._add_device(node, gpu, resource, existing) for gpu, resource, existing in devices]
        self.devices_of[pod.key] = (node.state.name, [(g.state.index, r, e) for g, r, e in devices])
        first = got[0]
        self.placed.append(Placed(pod.key, node.state.name, first.gpu, first.profile, first.existing, tuple(got[1:])))
        if any(node.free.get(r, 0) < n for r, n in self.least.items()):
            # free resources only shrink: no candidate fits this node again; stop looking at it
            node.full = True
            for eligible in self.classes.values():
                eligible.discard(node.id)
            for gpu in node.gpus:
                self._unindex(gpu)
                for index in self.soft_index.values():
                    index.pop(gpu.id, None)

    def _add_device(self, node: _Node, gpu: _Gpu, resource: str, existing: Instance | None) -> Device:
        self._unindex(gpu)
        if existing is not None:
            gpu.soft.remove(existing)
            gpu.claimable[resource].remove(existing)
            gpu.fixed = tuple(sorted((*gpu.fixed, existing)))
            if not gpu.claimable[resource]:
                self.soft_index[resource].pop(gpu.id, None)
            profile = existing.profile
        else:
            p = gpu.model.profile_for_resource(resource)
            assert p is not None
            profile = p.name
            gpu.wanted = tuple(sorted((*gpu.wanted, profile)))
        if existing is None and not node.changed:
            node.changed = True
            for other in node.gpus:
                if other is not gpu:
                    self._unindex(other)
                    self._index(other)
        self._index(gpu)
        return Device(gpu.state.index, profile, existing is not None)

    def _reason(
        self,
        devices: tuple[str, ...],
        scheduling_class: SchedulingClass,
        eligible_ids: set[int],
        requests: Sequence[tuple[str, int]],
    ) -> str:
        """Why a pod found no place, in the scheduler's terms where it can."""
        resource = devices[0] if len(set(devices)) == 1 else " + ".join(devices)
        offering = self.offering.get(devices)
        if offering is None:
            offering = self.offering[devices] = [
                n
                for n in self.nodes
                if n.state.model is not None and all(r in n.state.model.by_resource for r in devices)
            ]
        # a node that accepts the pod may have left the index because it is full: it still counts
        accepting = self.accepting.get(scheduling_class, frozenset(eligible_ids))
        eligible = [n for n in offering if n.id in accepting]
        if not eligible:
            refusals = Counter(node_refusal(scheduling_class, n.state.info) for n in offering)
            why = "; ".join(f"{c} node(s): {r}" for r, c in sorted(refusals.items(), key=str) if r)
            return f"no node offering {resource} accepts the pod ({why or 'all managed nodes are frozen'})"
        # one walk over the eligible nodes: the first roomy node with a GPU that could host the
        # device settles the common case (a busy cluster) without visiting the rest
        roomy: list[_Node] = []
        for n in eligible:
            if not self._fits(n, requests):
                continue
            roomy.append(n)
            if len(devices) == 1 and any(self._could_host(gpu, resource) for gpu in n.gpus):
                return (
                    f"the GPU capacity that could host {resource} went to pods planned before it"
                    " (higher priority or smaller profiles)"
                )
        if not roomy:
            lacking = Counter(r for n in eligible for r in insufficient(dict(requests), n.free))
            what = ", ".join(f"{r} on {c}" for r, c in sorted(lacking.items()))
            return f"fits no node: insufficient {what} of {len(eligible)} eligible node(s)"
        if len(devices) > 1:
            return (
                f"no eligible node can host all {len(devices)} of its MIG devices ({', '.join(devices)}) at once"
                " next to its in-use instances and the pods planned before it"
            )
        restricted = (
            " within the allowed geometries"
            if any(self.packer.restricted(g.model) for n in roomy for g in n.gpus)
            else ""
        )
        return (
            f"no GPU of the {len(roomy)} eligible node(s) can host {resource} next to its in-use instances" + restricted
        )

    def _could_host(self, gpu: _Gpu, resource: str) -> bool:
        """Whether the GPU, emptied of every instance not in use, could host the device."""
        p = gpu.model.profile_for_resource(resource)
        return p is not None and self.packer.feasible(gpu.model, gpu.state.used, (p.name,), gpu.state.blocked)

    # ------------------------------------------------------------------ result

    def _order(self, pod: CandidatePod) -> tuple[Any, ...]:
        return self.strategy.order(pod, self.state.catalog)

    def run(self) -> _Planning:
        for pod in sorted(self.state.candidates, key=self._order):
            self.place(pod)
        return self

    def apply(
        self, placements: Mapping[str, tuple[str, Sequence[tuple[int, str, Instance | None]]]]
    ) -> _Planning | None:
        """Commit a given placement (the optimizing stage's), then run the greedy pass on the pods
        it leaves out; None when it does not fit the GPUs (a model bug: the caller keeps the
        greedy plan)."""
        by_name = {n.state.name: n for n in self.nodes}
        gpu_of = {(g.node.state.name, g.state.index): g for g in self.gpus}
        rest = []
        for pod in sorted(self.state.candidates, key=self._order):
            where = placements.get(pod.key)
            if where is None:
                rest.append(pod)
                continue
            node = by_name[where[0]]
            requests = tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
            devices = []
            for index, resource, existing in where[1]:
                gpu = gpu_of[(where[0], index)]
                if existing is not None and existing not in gpu.claimable.get(resource, ()):
                    return None
                devices.append((gpu, resource, existing))
            self._commit(pod, node, devices, requests)
        if any(not self.packer.feasible(g.model, g.fixed, g.wanted, g.state.blocked) for g in self.gpus):
            return None
        if any(n.free.get(r, 0) < min(0, v) for n in self.nodes for r, v in n.state.free.items()):
            return None
        for pod in rest:
            self.place(pod)
        return self

    def score(self) -> tuple[Any, ...]:
        """The objective, to maximise: pods placed per priority (highest first), then fewer
        reconfigured nodes."""
        priorities = sorted({p.priority for p in self.state.candidates}, reverse=True)
        by_priority = {p.key: p.priority for p in self.state.candidates}
        placed = [sum(1 for x in self.placed if by_priority[x.pod] == prio) for prio in priorities]
        return (*placed, -sum(n.changed for n in self.nodes))

    def finish(self, plan_id: str | None, fill: bool) -> Plan:
        node_plans: dict[str, NodePlan] = {}
        for node in self.nodes:
            node_plans[node.state.name] = self._node_plan(node, fill)
        if plan_id is None:
            digest = hashlib.sha256(
                json.dumps(
                    {n: p.annotations for n, p in sorted(node_plans.items()) if p.write}, sort_keys=True
                ).encode()
            ).hexdigest()
            plan_id = digest[:12]
        for p in node_plans.values():
            if p.write:
                p.annotations[SPEC_PLAN] = plan_id
        return Plan(plan_id, node_plans, self.placed, self.unplaced, list(self.state.problems))

    def _node_plan(self, node: _Node, fill: bool) -> NodePlan:
        ns = node.state
        current_spec = ns.current_spec_annotations
        if ns.frozen or ns.model is None:
            gpus = [GpuPlan(g.index, g.model.name, g.instances, g.instances, g.frozen) for g in ns.gpus]
            return NodePlan(ns.name, gpus, dict(current_spec), False, ns.frozen or "unknown GPU model")
        working = {g.state.index: g for g in node.gpus}
        planned: dict[int, tuple[Instance, ...]] = {}
        gpu_plans = []
        frozen_keys: dict[str, str] = {}
        for gs in ns.gpus:
            gpu = working.get(gs.index)
            if gpu is None:  # frozen GPU: its spec stays exactly as it is
                keys = {
                    k: v
                    for k, v in current_spec.items()
                    if k.startswith(f"{SPEC_PREFIX}{gs.index}-") or k == f"{SPEC_PLACEMENT_PREFIX}{gs.index}"
                }
                if not keys:
                    gpus = [GpuPlan(g.index, g.model.name, g.instances, g.instances, g.frozen) for g in ns.gpus]
                    reason = f"GPU {gs.index} is frozen ({gs.frozen}) and has no spec to keep"
                    return NodePlan(ns.name, gpus, dict(current_spec), False, reason)
                frozen_keys.update(keys)
                gpu_plans.append(GpuPlan(gs.index, gs.model.name, gs.instances, gs.instances, gs.frozen))
                continue
            layout = gs.instances
            if node.changed or not gs.instances:
                made = self.packer.materialize(
                    gs.model,
                    gpu.fixed,
                    gpu.wanted,
                    tuple(gpu.soft),
                    fill or not (gs.instances or gpu.wanted),
                    gs.blocked,
                )
                if made is None:  # cannot happen: every addition was checked feasible
                    raise AssertionError(f"planned layout of {ns.name} GPU {gs.index} became infeasible")
                layout = made
            planned[gs.index] = layout
            gpu_plans.append(GpuPlan(gs.index, gs.model.name, gs.instances, layout))
        desired = encode_spec({i: [x.freed() for x in lay] for i, lay in planned.items()}, None)
        desired.update(frozen_keys)
        current_no_plan = {k: v for k, v in current_spec.items() if k != SPEC_PLAN}
        write = desired != current_no_plan
        annotations = desired if write else dict(current_spec)
        return NodePlan(ns.name, gpu_plans, annotations, write)


DEFAULT_BUDGET_S = PLAN_BUDGET_SECONDS
"""Seconds a planning round may take (greedy passes, optimizing stage and writing the plan): the
measurements behind it are in docs/benchmarks.md."""
WHOLE_CLUSTER_NODES = 60
"""Up to this many managed nodes the optimizing stage ends with a MIP over the whole cluster
(above, only the local moves around pending pods run)."""


def plan_state(
    state: ClusterState,
    *,
    geometries: Mapping[str, Sequence[Geometry]] | None = None,
    plan_id: str | None = None,
    fill: bool = False,
    strategies: Sequence[Strategy] = STRATEGIES,
    budget: float = DEFAULT_BUDGET_S,
    optimize: bool = True,
    share_weight: float = PROFILE_SHARES,
    share_mix: Mapping[str, float] | None = None,
) -> Plan:
    """Plan on an already built cluster state (see ``plan``): run each strategy's greedy pass, keep
    the one with the best objective, then let the optimizing stage improve it within what is left
    of ``budget`` seconds (``optimize=False``: greedy only). Profiles below ``share_weight`` times
    their share of the demand (of ``share_mix``, when given) get holds (``nos.planner.shares``; 0:
    none)."""
    started = time.perf_counter()
    state, standings = shares.with_holds(state, share_weight, share_mix)
    packer = Packer(geometries)  # shared: the passes ask the same placement questions
    best: _Planning | None = None
    passes = 1
    eligibility = Eligibility([ns.info for ns in state.nodes.values()])
    deadline = started + budget
    limit = bound.Bound(state, packer, eligibility)
    unbeatable = False
    for strategy in strategies:
        now = time.perf_counter()
        if best is not None and now + 1.25 * (now - started) / passes > deadline:
            break  # the first pass always runs; the others only when one more (and writing) fits
        work = _Planning(state, packer, strategy, eligibility).run()
        passes = passes + 1 if best is not None else 1
        if best is None or work.score() > best.score():
            best = work
            # no later pass or stage can score higher (the common round under a backlog: nothing fits)
            unbeatable = limit.met([p.pod for p in work.placed], sum(n.changed for n in work.nodes))
            if unbeatable:
                break
    assert best is not None, "at least one strategy is needed"
    search = Search("greedy", False, "optimizing stage off")
    if unbeatable:
        # with no node reconfigured no free instance is destroyed either: the whole objective is at its best
        changed = sum(n.changed for n in best.nodes)
        search = Search("greedy", changed == 0, "the greedy plan meets the upper bound (nos.planner.bound)")
    elif optimize:
        # keep a quarter of a pass for writing the plan (materialising the layouts)
        reserve = 0.25 * (time.perf_counter() - started) / passes
        best, search = _optimize(state, packer, best, deadline - reserve)
    result = shares.apart(best.finish(plan_id, fill), standings)
    result.search = search
    return result


def _optimize(state: ClusterState, packer: Packer, greedy: _Planning, deadline: float) -> tuple[_Planning, Search]:
    """The optimizing stage (``nos.planner.lns``) from the greedy's plan; its plan replaces the
    greedy's when it scores higher."""
    servable = [p for p in state.candidates if not p.mig_problem and all(r in greedy.offered for r in p.mig_devices)]
    whole = len(state.nodes) <= WHOLE_CLUSTER_NODES
    if not whole and len(greedy.placed) == len(servable):
        return greedy, Search("greedy", False, "every candidate placed; fewer reconfigured nodes not searched")
    if deadline - time.perf_counter() <= 0.05:
        return greedy, Search("greedy", False, "time budget spent by the greedy passes")
    outcome = lns.improve(state, servable, greedy.devices_of, deadline, whole, greedy.eligibility, packer)
    if not outcome.improved and not outcome.optimal and not whole:
        return greedy, Search("greedy", False, outcome.note)
    work = _Planning(state, packer, STRATEGIES[0], greedy.eligibility).apply(outcome.placements)
    if work is None:  # cannot happen: patterns are reachable layouts
        return greedy, Search("greedy", False, "the optimizing stage's plan did not fit; greedy plan kept")
    if work.score() > greedy.score():
        return work, Search("optimized", outcome.optimal, outcome.note)
    if work.score() == greedy.score():
        # measured in nos simulate: at an equal score the greedy's best-fit placements keep larger
        # free blocks for later pods (default scenario: mean pending 7.2 min with the stage's plan,
        # 5.6 min with the greedy's); proven optimal on pods and reconfigured nodes if the stage's was
        note = "; ".join(filter(None, (outcome.note, "equal score: greedy plan kept")))
        return greedy, Search("greedy", outcome.optimal, note)
    return greedy, Search("greedy", False, outcome.note)


def plan(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    catalog: Catalog | None = None,
    geometries: Mapping[str, Sequence[Geometry]] | None = None,
    plan_id: str | None = None,
    fill: bool = False,
    budget: float = DEFAULT_BUDGET_S,
    share_weight: float = PROFILE_SHARES,
    share_mix: Mapping[str, float] | None = None,
) -> Plan:
    """Desired layouts for every GPU of every MIG-labelled node, and where candidates will fit.

    ``geometries`` restricts models to allowed layouts (``nos.mig.geometries``). ``fill`` fills the
    spare slots of reconfigured GPUs with the largest instances that fit, so later pods of those
    profiles find devices without a reconfiguration; off by default, because in ``nos simulate``
    the filled instances were claimed by later pods of their size and split GPUs that best fit
    would have kept whole (docs/simulate.md). GPUs left without any instance get the contract's initial
    layout either way. Deterministic: the same input gives the same plan and
    plan id (a digest of the annotations to write) unless ``plan_id`` is given.
    """
    return plan_state(
        build_cluster(nodes, pods, catalog or default_catalog()),
        geometries=geometries,
        plan_id=plan_id,
        fill=fill,
        budget=budget,
        share_weight=share_weight,
        share_mix=share_mix,
    )
