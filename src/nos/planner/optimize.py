"""The optimizing stage: a MIP over pod classes and GPU patterns, solved by HiGHS.

The greedy passes are fast but myopic: a flexible pod takes the only node a constrained pod could
use, small pods take the GPUs a large one needed. This stage answers the same question exactly:

* pods with identical MIG devices, other requests, scheduling class and priority form a class,
  with an integer count per node it may go to (``y``);
* GPUs of a node with the same model, instances and blocked slots form a class, with an integer
  count per pattern (``x``: every non-dominated way such a GPU can end, ``nos.planner.patterns``);
* per node and MIG resource, the devices of the pods placed <= the free devices the chosen
  patterns offer; per node, cpu, memory, pods and other resources within what is free;
* objectives, in this order (``nos.planner.mip``: each level held at its optimum while the next
  is optimised): pods placed per priority, highest first; then fewer nodes changed and fewer
  existing free instances destroyed (a node weighs more than all instances). Larger free blocks
  are left to the materialisation of the layouts (``Packer.materialize``), as for the greedy.

A pattern is a whole-GPU layout, so the linear relaxation is tight and HiGHS proves optimality in
a fraction of a second on clusters of tens of nodes. On large clusters the model is built only
around the pods the greedy left pending (``neighbourhood``): the nodes they may use, with the
pods the greedy placed there, everything else fixed as the greedy planned it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nos.contract.pods import CandidatePod, is_mig_resource
from nos.kube.views.objects import POD_COUNT, SchedulingClass
from nos.kube.views.scheduling import node_refusal
from nos.mig.layout import Instance
from nos.mig.packing import Packer
from nos.planner.cluster import ClusterState, GpuState, NodeState
from nos.planner.mip import Mip, capacity_row, lexicographic
from nos.planner.patterns import Pattern, gpu_patterns

PodClass = tuple[tuple[str, ...], tuple[tuple[str, int], ...], SchedulingClass, int]
"""(MIG devices, other requests, scheduling class, priority)."""


def pod_class(pod: CandidatePod) -> PodClass:
    requests = tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
    return (pod.mig_devices, requests, pod.scheduling_class, pod.priority)


def could_host(
    node: NodeState,
    devices: tuple[str, ...],
    requests: Sequence[tuple[str, int]],
    free: dict[str, int],
    packer: Packer | None = None,
) -> bool:
    """Whether ``node`` (with ``free`` cpu, memory, pods...) could host a pod with these MIG
    ``devices`` and other ``requests`` if no other candidate went there: its devices spread over
    the node's GPUs so that each GPU's share fits next to its in-use instances (free ones may go).
    A necessary condition of every placement, so a pod class gets no column on a node failing it."""
    model = node.model
    if node.frozen or model is None or free.get(POD_COUNT, 0) < 1:
        return False
    if any(free.get(r, 0) < n for r, n in requests):
        return False
    names = []
    for r in devices:
        profile = model.profile_for_resource(r)
        if profile is None:
            return False
        names.append(profile.name)
    packer = packer or _PACKER
    full = (1 << len(names)) - 1
    # the device subsets each GPU could take; sets of devices placed so far, as bit masks
    shares = {m: tuple(sorted(n for i, n in enumerate(names) if m >> i & 1)) for m in range(1, full + 1)}
    reached = {0}
    for gpu in node.gpus:
        if gpu.frozen:
            continue
        fits = [m for m, wanted in shares.items() if packer.feasible(model, gpu.used, wanted, gpu.blocked)]
        reached |= {a | m for a in reached for m in fits if not a & m}
        if full in reached:
            return True
    return False


_PACKER = Packer()
"""Placement questions of ``could_host`` without allowed geometries."""


@dataclass
class Solution:
    """Where the optimum puts each pod: node and, per device, (GPU index, resource, existing free
    instance claimed or None for a new one)."""

    pods: dict[str, tuple[str, list[tuple[int, str, Instance | None]]]] = field(default_factory=dict)
    optimal: bool = False
    found: bool = False
    """Whether HiGHS returned a solution (the warm start at least, when one was given)."""
    status: str = ""
    seconds: float = 0.0
    columns: int = 0
    rows: int = 0


@dataclass
class _GpuClass:
    gpus: list[GpuState]
    patterns: tuple[Pattern, ...]
    vars: list[int] = field(default_factory=list)


Placements = dict[str, tuple[str, list[tuple[int, str, Instance | None]]]]
"""Pod key -> (node, per device: (GPU index, MIG resource, existing free instance claimed or None))."""


def solve(
    state: ClusterState,
    pods: Sequence[CandidatePod],
    nodes: Iterable[NodeState],
    free: dict[str, dict[str, int]],
    time_limit: float,
    start: Placements | None = None,
    disruption: bool = True,
    packer: Packer | None = None,
    settle: bool = False,
) -> Solution:
    """The best placement of ``pods`` on ``nodes`` (each with the ``free`` node resources given),
    every objective level optimised in turn within ``time_limit`` seconds. ``start``, a feasible
    placement of some of these pods on these nodes (the greedy's), is the warm start. Without
    ``disruption`` only the pods placed count (no last level for reconfigured nodes). ``packer``
    brings the allowed geometries, if any. ``settle``: stop once a plan better than ``start`` is
    found (``Mip.solve``)."""
    started = time.perf_counter()
    model = build(state, pods, nodes, free, disruption, packer)
    left = time_limit - (time.perf_counter() - started)
    solution = model.solve(left, model.start(start) if start is not None else None, settle=settle)
    solution.seconds = time.perf_counter() - started
    return solution


@dataclass
class Model:
    """The MIP of ``solve`` once built, to be solved several times: whole, or with some columns
    fixed (``nos.planner.lns``' moves guided by the linear relaxation)."""

    mip: Mip
    objectives: list[dict[int, float]]
    classes: dict[PodClass, list[CandidatePod]]
    y_vars: dict[tuple[PodClass, str], int]
    gpu_classes: dict[str, list[_GpuClass]]
    z_vars: dict[str, int]
    placed: dict[int, dict[int, float]]
    """Per priority, the sum of its pods placed (column -> 1)."""

    def columns_of(self, nodes: Iterable[str]) -> list[int]:
        """Every column of these nodes: their pod counts, GPU patterns and changed flags."""
        names = set(nodes)
        out = [y for (_, n), y in self.y_vars.items() if n in names]
        for name in names:
            out += [x for gc in self.gpu_classes.get(name, ()) for x in gc.vars]
            if name in self.z_vars:
                out.append(self.z_vars[name])
        return out

    def start(self, placements: Placements) -> list[float] | None:
        """Column values of a feasible placement (see ``_warm_start``)."""
        return _warm_start(self.mip.columns, placements, self.classes, self.y_vars, self.gpu_classes, self.z_vars)

    def relaxation(self, time_limit: float) -> Any:
        """Column values of an optimum of the linear relaxation of the first objective; None when
        not solved in ``time_limit`` seconds."""
        solved = self.mip.relaxation(self.objectives[0], time_limit)
        return None if solved is None else solved[0]

    def level_bound(self, priority: int, held: Mapping[int, int], time_limit: float) -> tuple[float, Any] | None:
        """An upper bound on the pods of ``priority`` any plan places that places at least
        ``held[p]`` pods of each priority ``p`` given (the linear relaxation), and the column
        values of that relaxation's optimum; None when not solved in ``time_limit`` seconds."""
        rows = [(self.placed[p], n - 1e-6) for p, n in held.items() if p in self.placed]
        solved = self.mip.relaxation(self.placed.get(priority, {}), time_limit, rows)
        return None if solved is None else (solved[1], solved[0])

    def solve(
        self,
        time_limit: float,
        start: Sequence[float] | None = None,
        settle: bool = False,
        fixed: Mapping[int, float] | None = None,
    ) -> Solution:
        """Solve within ``time_limit`` seconds from the warm start ``start`` (column values),
        with the columns ``fixed`` held at the values given (``start`` must agree)."""
        started = time.perf_counter()
        m = self.mip
        result = m.solve(self.objectives, max(0.0, time_limit), start, settle=settle and start is not None, fixed=fixed)
        optimal = result.optimal and not fixed  # with columns held, only optimal among plans that keep them
        solution = Solution(optimal=optimal, found=result.found, status=result.status, columns=m.columns, rows=m.rows)
        if result.found:
            _extract(solution, result.values, self.classes, self.y_vars, self.gpu_classes)
        solution.seconds = time.perf_counter() - started
        return solution


def build(
    state: ClusterState,
    pods: Sequence[CandidatePod],
    nodes: Iterable[NodeState],
    free: dict[str, dict[str, int]],
    disruption: bool = True,
    packer: Packer | None = None,
) -> Model:
    """The model of ``solve``."""
    m = Mip()
    classes: dict[PodClass, list[CandidatePod]] = {}
    for pod in pods:
        classes.setdefault(pod_class(pod), []).append(pod)
    levels = sorted({c[3] for c in classes}, reverse=True)
    placed_terms: dict[int, dict[int, float]] = {prio: {} for prio in levels}
    disrupt: dict[int, float] = {}
    node_list = [n for n in nodes if not n.frozen and n.model is not None]
    total_free = sum(len(g.free) for n in node_list for g in n.gpus if not g.frozen)
    node_weight = float(total_free + 1)
    y_vars: dict[tuple[PodClass, str], int] = {}
    gpu_classes: dict[str, list[_GpuClass]] = {}
    changed_const = 0
    z_vars: dict[str, int] = {}
    refusals: dict[tuple[SchedulingClass, str], bool] = {}
    for ns in node_list:
        model = ns.model
        assert model is not None
        groups: dict[tuple[tuple[Instance, ...], int], list[GpuState]] = {}
        for gs in ns.gpus:
            if not gs.frozen:
                groups.setdefault((gs.instances, gs.blocked), []).append(gs)
        offers: dict[str, list[tuple[int, float]]] = {}
        const_offers: Counter[str] = Counter()
        changing: list[tuple[int, float]] = []
        always_changed = any(not gs.instances for gs in ns.gpus if not gs.frozen)
        node_classes = []
        for (instances, blocked), members in groups.items():
            allowed = packer.allowed(model) if packer is not None else None
            gc = _GpuClass(members, gpu_patterns(model, instances, blocked, allowed))
            node_classes.append(gc)
            count = float(len(members))
            if len(gc.patterns) == 1:
                continue
            row = []
            for p in gc.patterns:
                x = m.var(count)
                gc.vars.append(x)
                row.append((x, 1.0))
                for r, n in p.offers:
                    offers.setdefault(r, []).append((x, float(n)))
                if p.destroyed:
                    disrupt[x] = disrupt.get(x, 0.0) - p.destroyed
                if p.changed:
                    changing.append((x, 1.0))
            m.row(row, count, count)
        for gc in node_classes:
            if len(gc.patterns) == 1:
                (p,) = gc.patterns
                for r, n in p.offers:
                    const_offers[r] += n * len(gc.gpus)
                always_changed = always_changed or p.changed
        gpu_classes[ns.name] = node_classes
        if always_changed:
            changed_const += 1
        elif changing:
            z = z_vars[ns.name] = m.var(1.0)
            disrupt[z] = -node_weight
            n_gpus = sum(len(gc.gpus) for gc in node_classes)
            m.row([*changing, (z, -float(n_gpus))], 0.0)
        resources = set(offers) | set(const_offers)
        demand: dict[str, list[tuple[int, float]]] = {}
        node_terms: dict[str, list[tuple[int, int]]] = {}
        node_free = free[ns.name]
        hosting: dict[tuple[str, ...], bool] = {}
        for cls, pods_of in classes.items():
            devices, requests, scheduling_class, priority = cls
            if any(r not in resources for r in devices) or any(node_free.get(r, 0) < n for r, n in requests):
                continue
            hosted = hosting.get(devices)
            if hosted is None:
                hosted = hosting[devices] = could_host(ns, devices, (), node_free, packer)
            if not hosted:
                continue
            key = (scheduling_class, ns.name)
            refused = refusals.get(key)
            if refused is None:
                refused = refusals[key] = node_refusal(scheduling_class, ns.info) is not None
            if refused:
                continue
            y = m.var(float(len(pods_of)))
            y_vars[(cls, ns.name)] = y
            placed_terms[priority][y] = 1.0
            for r, k in Counter(devices).items():
                demand.setdefault(r, []).append((y, float(k)))
            for r, amount in requests:
                node_terms.setdefault(r, []).append((y, amount))
            node_terms.setdefault(POD_COUNT, []).append((y, 1))
        for r, terms in demand.items():
            m.row([*terms, *((x, -n) for x, n in offers.get(r, ()))], float(const_offers[r]))
        for r, amounts in node_terms.items():
            m.row(*capacity_row(amounts, node_free.get(r, 0)))
    by_class: dict[PodClass, list[tuple[int, float]]] = {}
    for (c, _), y in y_vars.items():
        by_class.setdefault(c, []).append((y, 1.0))
    for cls, ys in by_class.items():
        if len(ys) > 1:
            m.row(ys, float(len(classes[cls])))
    bounds = [float(sum(len(v) for c, v in classes.items() if c[3] == prio)) for prio in levels]
    objectives = lexicographic(
        [*(placed_terms[p] for p in levels), *([disrupt] if disruption else [])],
        [*bounds, *([node_weight * (len(node_list) + 1)] if disruption else [])],
    )
    return Model(m, objectives, classes, y_vars, gpu_classes, z_vars, placed_terms)


def _warm_start(
    columns: int,
    start: Placements,
    classes: dict[PodClass, list[CandidatePod]],
    y_vars: dict[tuple[PodClass, str], int],
    gpu_classes: dict[str, list[_GpuClass]],
    z_vars: dict[str, int],
) -> list[float] | None:
    """The greedy's placement as column values: each GPU takes a pattern offering what the greedy
    put on it (one exists: the greedy's layout is a pattern or dominated by one); None when a pod
    sits where the model has no column for it."""
    values = [0.0] * columns
    for cls, members in classes.items():
        for pod in members:
            where = start.get(pod.key)
            if where is not None:
                y = y_vars.get((cls, where[0]))
                if y is None:
                    return None
                values[y] += 1
    for node, node_classes in gpu_classes.items():
        need: dict[int, Counter[str]] = {}
        for _, (n, devices) in start.items():
            if n != node:
                continue
            for gpu, resource, _existing in devices:
                need.setdefault(gpu, Counter())[resource] += 1
        for gc in node_classes:
            if not gc.vars:
                continue
            for gs in gc.gpus:
                wants = need.get(gs.index, Counter())
                fits = [
                    k for k, p in enumerate(gc.patterns) if all(dict(p.offers).get(r, 0) >= n for r, n in wants.items())
                ]
                if not fits:
                    return None
                best = min(fits, key=lambda k: (gc.patterns[k].changed and not wants, gc.patterns[k].destroyed))
                values[gc.vars[best]] += 1
                if gc.patterns[best].changed and node in z_vars:
                    values[z_vars[node]] = 1.0
    return values


def _extract(
    solution: Solution,
    values: Any,
    classes: dict[PodClass, list[CandidatePod]],
    y_vars: dict[tuple[PodClass, str], int],
    gpu_classes: dict[str, list[_GpuClass]],
) -> None:
    """Pods of each class to nodes, and their devices to the free instances of the patterns
    chosen for the node's GPUs: existing free instances first (no change), then new ones."""
    taken: dict[PodClass, int] = {}
    slots: dict[str, dict[str, list[tuple[int, str, Instance | None]]]] = {}
    for (cls, node), y in sorted(y_vars.items(), key=lambda kv: kv[1]):
        count = round(values[y])
        if count <= 0:
            continue
        if node not in slots:
            slots[node] = _node_slots(gpu_classes[node], values)
        pods = classes[cls]
        for _ in range(count):
            k = taken.get(cls, 0)
            taken[cls] = k + 1
            devices = [slots[node][r].pop(0) for r in cls[0]]
            solution.pods[pods[k].key] = (node, devices)


def _node_slots(node_classes: list[_GpuClass], values: Any) -> dict[str, list[tuple[int, str, Instance | None]]]:
    """Per MIG resource, the free devices the chosen patterns offer on one node: (GPU index,
    resource, existing instance or None), existing ones first."""
    existing: dict[str, list[tuple[int, str, Instance | None]]] = {}
    new: dict[str, list[tuple[int, str, Instance | None]]] = {}
    for gc in node_classes:
        chosen: list[Pattern] = []
        if not gc.vars:
            chosen = [gc.patterns[0]] * len(gc.gpus)
        else:
            for p, x in zip(gc.patterns, gc.vars, strict=True):
                chosen += [p] * round(values[x])
        for gs, p in zip(gc.gpus, chosen, strict=True):
            for inst in p.kept:
                r = gs.model.profile(inst.profile).resource
                existing.setdefault(r, []).append((gs.index, r, inst))
            for inst in p.new:
                r = gs.model.profile(inst.profile).resource
                new.setdefault(r, []).append((gs.index, r, None))
    return {r: existing.get(r, []) + new.get(r, []) for r in set(existing) | set(new)}
