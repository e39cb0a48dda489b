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
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nos.contract.annotations import SPEC_PLACEMENT_PREFIX, SPEC_PLAN, SPEC_PREFIX, encode_spec
from nos.kube.objects import POD_COUNT, Placement, PodInfo, is_mig_resource
from nos.kube.scheduling import insufficient, placement_refusal
from nos.mig.catalog import Catalog, GpuModel, default_catalog
from nos.mig.layout import Instance
from nos.mig.packing import Geometry, Packer
from nos.planner.cluster import ClusterState, GpuState, NodeState, build_cluster
from nos.planner.plan import GpuPlan, NodePlan, Placed, Plan, Unplaced

_SIZE = re.compile(r"mig-(\d+)g\.(\d+)gb")


def _profile_size(resource: str) -> tuple[int, int]:
    m = _SIZE.search(resource)
    return (int(m[1]), int(m[2])) if m else (99, 999)


def candidate_order(pod: PodInfo) -> tuple[Any, ...]:
    """The contract's order: higher priority first, then smaller profiles, then oldest."""
    resource = next(iter(pod.mig_requests), "")
    return (-pod.priority, _profile_size(resource), pod.created, pod.key)


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


@dataclass(frozen=True)
class Strategy:
    """One way to run the greedy pass; the planner runs several and keeps the best plan."""

    large_first: bool = False
    """Within a priority, larger profiles first (first-fit decreasing) instead of the contract's smaller first."""
    claim_by_fit: bool = False
    """Take an existing free instance only if no new instance fits more tightly elsewhere; otherwise
    existing free instances always win (no reconfiguration)."""

    def order(self, pod: PodInfo) -> tuple[Any, ...]:
        key = candidate_order(pod)
        if self.large_first:
            compute, memory = key[1]
            return (key[0], (-compute, -memory), *key[2:])
        return key


STRATEGIES = (Strategy(), Strategy(large_first=True), Strategy(large_first=True, claim_by_fit=True))
"""Tried in this order; an earlier one wins ties. Small-first follows the original nos; large-first
packs better when capacity is short; claiming by fit stops small pods from taking the free instances
of the only GPU a large pod could use (see docs/benchmarks.md)."""


class _Planning:
    """One planning run: mutable working state over an immutable ClusterState."""

    def __init__(self, state: ClusterState, packer: Packer, strategy: Strategy = STRATEGIES[0]) -> None:
        self.state = state
        self.packer = packer
        self.strategy = strategy
        self.nodes: list[_Node] = []
        self.gpus: list[_Gpu] = []
        self.buckets: dict[tuple[Any, ...], dict[int, None]] = {}
        self.bucket_ids: dict[tuple[Any, ...], int] = {}
        self.heaps: dict[str, list[tuple[int, int, int, tuple[Any, ...]]]] = {}
        self.soft_index: dict[str, dict[int, None]] = {}
        self.classes: dict[Placement, set[int]] = {}
        self.failed: set[tuple[Any, ...]] = set()
        self.placed: list[Placed] = []
        self.unplaced: list[Unplaced] = []
        self.offered: dict[str, set[str]] = {}
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
        key = (gpu.model.name, gpu.fixed, gpu.state.blocked, gpu.wanted, gpu.node.changed)
        gpu.key = key
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = {}
            bid = self.bucket_ids[key] = len(self.bucket_ids)
            tier = 1 if gpu.node.changed else 2
            for resource in gpu.model.by_resource:
                profile = gpu.model.profile_for_resource(resource)
                if profile is None:
                    continue
                wanted = tuple(sorted((*gpu.wanted, profile.name)))
                q = self.packer.quality(gpu.model, gpu.fixed, wanted, gpu.state.blocked)
                if q is not None:  # lowest quality left first: best fit, large free blocks stay elsewhere
                    heapq.heappush(self.heaps.setdefault(resource, []), (tier, q, bid, key))
        bucket[gpu.id] = None

    def _unindex(self, gpu: _Gpu) -> None:
        assert gpu.key is not None
        bucket = self.buckets[gpu.key]
        del bucket[gpu.id]
        if not bucket:
            del self.buckets[gpu.key]
            del self.bucket_ids[gpu.key]

    # ------------------------------------------------------------------ pods

    def _eligible(self, placement: Placement) -> set[int]:
        """Nodes a pod of this scheduling class may go to (cached: classes are few)."""
        eligible = self.classes.get(placement)
        if eligible is None:
            eligible = self.classes[placement] = {
                n.id
                for n in self.nodes
                if not n.state.frozen
                and n.state.model is not None
                and placement_refusal(placement, n.state.info) is None
            }
        return eligible

    @staticmethod
    def _fits(node: _Node, requests: Sequence[tuple[str, int]]) -> bool:
        free = node.free
        if free.get(POD_COUNT, 0) < 1:
            return False
        return all(free.get(r, 0) >= n for r, n in requests)

    def place(self, pod: PodInfo) -> None:
        if pod.mig_problem:
            self.unplaced.append(Unplaced(pod.key, pod.mig_problem))
            return
        resource = pod.mig_resource
        assert resource is not None
        if resource not in self.offered:
            models = sorted({m for ms in self.offered.values() for m in ms})
            have = f" (managed GPU models: {', '.join(models)})" if models else " (no managed MIG node)"
            self.unplaced.append(Unplaced(pod.key, f"no GPU model in the cluster offers {resource}{have}"))
            return
        requests = tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
        signature = (resource, pod.placement, requests)
        eligible = self._eligible(pod.placement)
        if signature not in self.failed:
            gpu, existing, claim_quality = self._claim(resource, eligible, requests)
            if gpu is None or self.strategy.claim_by_fit:
                new, new_quality = self._new(resource, eligible, requests)
                if new is not None and (gpu is None or new_quality < claim_quality):
                    gpu, existing = new, None
            if gpu is not None:
                self._commit(pod, gpu, resource, requests, existing)
                return
            self.failed.add(signature)
        self.unplaced.append(Unplaced(pod.key, self._reason(resource, pod.placement, eligible, requests)))

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
            key = entry[3]
            if self.bucket_ids.get(key) != entry[2]:
                continue  # stale: the bucket emptied since
            popped.append(entry)
            for gid in self.buckets[key]:
                gpu = self.gpus[gid]
                if gpu.node.id in eligible and self._fits(gpu.node, requests):
                    found = (gpu, entry[1])
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
            if not self._fits(node, requests):
                continue
            for gpu in node.gpus:
                profile = gpu.model.profile_for_resource(resource)
                if profile is None:
                    continue
                wanted = tuple(sorted((*gpu.wanted, profile.name)))
                q = self.packer.quality(gpu.model, gpu.fixed, wanted, gpu.state.blocked)
                if q is None:
                    continue
                rank = (1 if node.changed else 2, q, gpu.id)
                if best is None or rank < best:
                    best, found = rank, (gpu, q)
        return found

    def _commit(
        self,
        pod: PodInfo,
        gpu: _Gpu,
        resource: str,
        requests: Sequence[tuple[str, int]],
        existing: Instance | None,
    ) -> None:
        node = gpu.node
        for r, n in requests:
            node.free[r] = node.free.get(r, 0) - n
        node.free[POD_COUNT] = node.free.get(POD_COUNT, 0) - 1
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
        self.placed.append(Placed(pod.key, node.state.name, gpu.state.index, profile, existing is not None))

    def _reason(
        self, resource: str, placement: Placement, eligible_ids: set[int], requests: Sequence[tuple[str, int]]
    ) -> str:
        """Why a pod found no place, in the scheduler's terms where it can."""
        offering = [n for n in self.nodes if n.state.model is not None and resource in n.state.model.by_resource]
        eligible = [n for n in offering if n.id in eligible_ids]
        if not eligible:
            refusals = Counter(placement_refusal(placement, n.state.info) for n in offering)
            why = "; ".join(f"{c} node(s): {r}" for r, c in sorted(refusals.items(), key=str) if r)
            return f"no node offering {resource} accepts the pod ({why or 'all managed nodes are frozen'})"
        roomy = [n for n in eligible if self._fits(n, requests)]
        if not roomy:
            lacking = Counter(r for n in eligible for r in insufficient(dict(requests), n.free))
            what = ", ".join(f"{r} on {c}" for r, c in sorted(lacking.items()))
            return f"fits no node: insufficient {what} of {len(eligible)} eligible node(s)"
        for n in roomy:
            for gpu in n.gpus:
                p = gpu.model.profile_for_resource(resource)
                if p is not None and self.packer.feasible(gpu.model, gpu.state.used, (p.name,), gpu.state.blocked):
                    return (
                        f"the GPU capacity that could host {resource} went to pods planned before it"
                        " (higher priority or smaller profiles)"
                    )
        restricted = (
            " within the allowed geometries"
            if any(self.packer.restricted(g.model) for n in roomy for g in n.gpus)
            else ""
        )
        return (
            f"no GPU of the {len(roomy)} eligible node(s) can host {resource} next to its in-use instances" + restricted
        )

    # ------------------------------------------------------------------ result

    def run(self) -> _Planning:
        for pod in sorted(self.state.candidates, key=self.strategy.order):
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


def plan_state(
    state: ClusterState,
    *,
    geometries: Mapping[str, Sequence[Geometry]] | None = None,
    plan_id: str | None = None,
    fill: bool = False,
    strategies: Sequence[Strategy] = STRATEGIES,
) -> Plan:
    """Plan on an already built cluster state (see ``plan``): run each strategy's greedy pass and
    materialise the one with the best objective."""
    packer = Packer(geometries)  # shared: the passes ask the same placement questions
    best: _Planning | None = None
    for strategy in strategies:
        work = _Planning(state, packer, strategy).run()
        if best is None or work.score() > best.score():
            best = work
    assert best is not None, "at least one strategy is needed"
    return best.finish(plan_id, fill)


def plan(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    catalog: Catalog | None = None,
    geometries: Mapping[str, Sequence[Geometry]] | None = None,
    plan_id: str | None = None,
    fill: bool = False,
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
    )
