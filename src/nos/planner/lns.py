"""Large-neighbourhood search around a plan, with the MIP of ``nos.planner.optimize`` as the move.

Measured on the heterogeneous benchmark families (docs/benchmarks.md): the MIP over a whole
cluster of 25-40 nodes often proves its optimum in one or two seconds, but HiGHS tends to find
the better plans only shortly before it proves them; a small MIP over a dozen nodes is solved in
tens of milliseconds. So the stage first repairs the plan locally: pick a pending pod (highest
priority first), a random handful of the nodes it may use, take every pod placed there plus the
pending pods of that priority that could go there, and re-solve that piece exactly, everything
else fixed, stopping as soon as it has a better plan (``settle``). A move is kept when it places
more pods, compared per priority from the highest (so a higher priority is never traded for lower
ones). Pods no node could host alone (``optimize.could_host``) are never targets.

On clusters small enough the whole-cluster model is built first and its linear relaxation solved:
*guided moves* re-solve the whole-cluster MIP with every column on which the plan and the
relaxation agree held as it is (relaxation induced neighbourhood search), from the greedy's plan
and from each better one, and again whenever the local moves reached a new plan and stalled. They
find the changes across many nodes that no dozen-node move sees (dense-3: 94 -> 106 of the
optimum's 107 top-priority pods in one move of 0.2-0.4 s). While pods of the highest priority are
pending, a move is a guided move that also frees the half-dozen nodes chosen for its target pod
(the relaxation's bound is tight there where measured, so its guidance is good: dense-3 reached
107); lower priorities, where the first objective's relaxation is loose (dense-3: 27 pods of priority
100 against the optimum's 4), get local moves, or, once every higher priority is complete, moves
guided by their own relaxation with the higher priorities held. A priority is complete, and
skipped, once the plan reaches the relaxation's bound for it with the higher priorities held at
what the plan places (``Model.level_bound``).
Once ``STALL_MOVES`` moves in a row (a guided one counting ``GUIDED_STALL_WEIGHT``) and a guided
move have improved nothing (or no pending pod is left to try), the MIP over the whole cluster,
warm-started with the result, improves it further or proves it optimal, within what is left.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nos.contract.pods import CandidatePod
from nos.kube.views.objects import SchedulingClass
from nos.mig.layout import Instance
from nos.mig.packing import Packer
from nos.planner import optimize
from nos.planner.cluster import ClusterState, NodeState
from nos.planner.eligibility import Eligibility

Placements = dict[str, tuple[str, list[tuple[int, str, Instance | None]]]]
"""Pod key -> (node, per device: (GPU index, MIG resource, existing free instance claimed or None))."""

MOVE_NODES = 12
"""Nodes in one neighbourhood."""
MOVE_SECONDS = 0.3
"""Time limit of one move's MIP."""
TRIES_PER_CLASS = 3
"""Moves tried for a pending pod class before it is given up."""
GUIDED_SECONDS = 0.5
"""Time limit of one guided move (the whole-cluster MIP around the plan's disagreements with the
linear relaxation)."""
RELAXATION_SHARE = 0.25
"""At most this share of the time left goes to the linear relaxation that guides those moves."""
GUIDED_STALL_WEIGHT = 3
"""A guided move that improves nothing counts as this many local moves towards ``STALL_MOVES`` (it
looks at far more of the cluster: dense-5, 12 nodes, reached its optimum only when the
whole-cluster MIP got the time two fruitless guided moves would take)."""
STALL_MOVES = 6
"""Moves in a row that improve nothing after which the local search hands the time left to the
whole-cluster MIP, when there is one (measured on the dense family, docs/benchmarks.md: a fixed
half of the time each starved the MIP where local moves could not help and the moves where they
could)."""


@dataclass
class Outcome:
    placements: Placements
    optimal: bool
    """The whole-cluster MIP proved ``placements`` optimal."""
    note: str
    moves: int = 0
    improved: int = 0


def _levels(pods: Sequence[CandidatePod], keys: Sequence[str]) -> tuple[int, ...]:
    """Pods placed per priority, highest first, over the priorities of ``pods``."""
    priority = {p.key: p.priority for p in pods}
    counts = Counter(priority[k] for k in keys if k in priority)
    return tuple(counts[p] for p in sorted({p.priority for p in pods}, reverse=True))


def improve(
    state: ClusterState,
    pods: Sequence[CandidatePod],
    placements: Placements,
    deadline: float,
    whole_cluster_mip: bool,
    eligibility: Eligibility | None = None,
    packer: Packer | None = None,
) -> Outcome:
    """Better placements of ``pods`` (the servable candidates) than ``placements`` (the greedy's),
    found before ``deadline`` (a ``time.perf_counter`` value). ``eligibility`` is over the nodes of
    ``state`` in their order (the greedy's, reused)."""
    every = list(state.nodes.values())
    eligibility = eligibility or Eligibility([n.info for n in every])
    nodes = {n.name: n for n in every if not n.frozen and n.model is not None}
    keys = {p.key for p in pods}
    current: Placements = {k: v for k, v in placements.items() if k in keys}
    eligible_of: dict[tuple[SchedulingClass, tuple[str, ...], tuple[tuple[str, int], ...]], list[str]] = {}
    class_of = {p.key: optimize.pod_class(p) for p in pods}
    by_key = {p.key: p for p in pods}

    def eligible(pod: CandidatePod) -> list[str]:
        """The nodes that could host the pod if no other candidate went there (a pod without any
        is never a target: no plan places it)."""
        cls = class_of[pod.key]
        key = (pod.scheduling_class, pod.mig_devices, cls[1])
        names = eligible_of.get(key)
        if names is None:
            names = eligible_of[key] = [
                n
                for n in reachable(pod)
                if all(nodes[n].free.get(r, 0) >= q for r, q in cls[1]) and hosts(n, pod.mig_devices)
            ]
        return names

    hosting: dict[tuple[str, tuple[str, ...]], bool] = {}
    reach_of: dict[tuple[SchedulingClass, tuple[str, ...]], list[str]] = {}

    def reachable(pod: CandidatePod) -> list[str]:
        """The nodes that accept the pod and offer its devices."""
        key = (pod.scheduling_class, pod.mig_devices)
        names = reach_of.get(key)
        if names is None:
            accepted = (every[i].name for i in eligibility.of(pod.scheduling_class))
            names = reach_of[key] = [
                n for n in accepted if n in nodes and all(r in _resources(nodes[n]) for r in pod.mig_devices)
            ]
        return names

    def hosts(name: str, devices: tuple[str, ...]) -> bool:
        """Whether the node could host these devices were no other candidate there (cached)."""
        known = hosting.get((name, devices))
        if known is None:
            known = hosting[(name, devices)] = optimize.could_host(nodes[name], devices, (), nodes[name].free, packer)
        return known

    rng = random.Random(0)
    tries: Counter[optimize.PodClass] = Counter()
    moves = improved = 0
    stalled = 0
    whole: optimize.Model | None = None
    relaxed = None
    guided_from: Placements | None = None
    if whole_cluster_mip:
        whole = optimize.build(state, pods, nodes.values(), {n: s.free for n, s in nodes.items()}, packer=packer)
        relaxed = whole.relaxation(max(0.0, deadline - time.perf_counter()) * RELAXATION_SHARE)

    def guided(free: set[str] | None = None, guide: Any = None) -> bool:
        """The guided move: the whole-cluster MIP with every column on which the current plan and
        the linear relaxation (``guide``'s column values, else the first objective's) agree held
        as it is (relaxation induced neighbourhood search), but those of the nodes ``free``;
        whether it improved the plan."""
        nonlocal current, guided_from, moves, improved
        if not free:
            guided_from = current
        left = deadline - time.perf_counter()
        values = whole.start(current) if whole is not None and relaxed is not None and left > 0.05 else None
        if whole is None or values is None:
            return False
        moves += 1
        fixed = _agreeing(values, relaxed if guide is None else guide)
        for i in whole.columns_of(free or ()):
            fixed.pop(i, None)
        solution = whole.solve(min(left, GUIDED_SECONDS), values, settle=True, fixed=fixed)
        if solution.found and _levels(pods, list(solution.pods)) > _levels(pods, list(current)):
            current = dict(solution.pods)
            improved += 1
            return True
        return False

    while guided():  # from the greedy's plan, then from each better one
        pass
    priorities = sorted({p.priority for p in pods}, reverse=True)
    bounds: dict[tuple[int, tuple[int, ...]], tuple[float, Any] | None] = {}

    def held_above(priority: int) -> tuple[Counter[int], dict[int, int]]:
        """The current plan's pods per priority, and those of the priorities above ``priority``."""
        counts = Counter(by_key[k].priority for k in current)
        return counts, {p: counts[p] for p in priorities if p > priority}

    def complete(priority: int) -> bool:
        """Whether no plan keeping the current plan's pods of higher priorities can place more of
        ``priority`` than it does (the linear relaxation's bound)."""
        if whole is None:
            return False
        counts, held = held_above(priority)
        key = (priority, tuple(held.values()))
        if key not in bounds:
            left = deadline - time.perf_counter()
            bounds[key] = whole.level_bound(priority, held, max(0.0, left) * RELAXATION_SHARE)
        limit = bounds[key]
        return limit is not None and counts[priority] >= math.floor(limit[0] + 1e-6)

    def guide(priority: int) -> Any:
        """The relaxation of ``priority`` with the higher ones held (``complete``'s), if the
        higher priorities are all complete; else None."""
        if whole is None or any(not complete(p) for p in priorities if p > priority):
            return None
        _, held = held_above(priority)
        solved = bounds.get((priority, tuple(held.values())))
        return None if solved is None else solved[1]

    # a move's nodes: those that could host its pods alone; on clusters too large for the
    # whole-cluster model, any node that offers their devices (measured: on 250-node clusters moves
    # over the former took twice as long, those nodes holding the most candidates, and the round
    # placed 2-3 pods fewer; on dense-3 the latter lost 2 pods of priority 100)
    neighbours = eligible if whole is not None else reachable
    while time.perf_counter() < deadline:
        pending = [p for p in pods if p.key not in current and tries[class_of[p.key]] < TRIES_PER_CLASS and eligible(p)]
        if not pending:
            break
        top = max(p.priority for p in pending)
        targets = [p for p in pending if p.priority == top]
        if complete(top):  # no move can place more of this priority: on to the next
            for p in targets:
                tries[class_of[p.key]] = TRIES_PER_CLASS
            continue
        target = targets[rng.randrange(len(targets))]
        guided_move = whole is not None and relaxed is not None and top == priorities[0]
        options = neighbours(target)
        # half the nodes the pod may use, half where the pods placed there could move to
        chosen = set(rng.sample(options, min(MOVE_NODES // 2, len(options))))
        core = set(chosen)
        movers = {k for k, v in current.items() if v[0] in chosen}
        elsewhere = sorted({n for k in movers for n in neighbours(by_key[k])} - chosen)
        chosen.update(rng.sample(elsewhere, min(MOVE_NODES - len(chosen), len(elsewhere))))
        rest = sorted(set(options) - chosen)
        chosen.update(rng.sample(rest, min(MOVE_NODES - len(chosen), len(rest))))
        # when that is every node there is, the next try would be the same: one is all there is
        exhaustive = len(options) <= MOVE_NODES // 2 and len(elsewhere) <= MOVE_NODES - len(options)
        tries[class_of[target.key]] += TRIES_PER_CLASS if exhaustive else 1
        sub = [
            p
            for p in pods
            if (p.key in current and current[p.key][0] in chosen)
            or (p.key not in current and p.priority >= top and chosen.intersection(eligible(p)))
        ]
        start = {k: v for k, v in current.items() if v[0] in chosen}
        left = deadline - time.perf_counter()
        if left <= 0.02:
            break
        # below the highest priority, once the higher ones are complete, the relaxation of this
        # one with them held guides a move the same way (dense-2: (48, 39, 2-3) -> (48, 39, 4));
        # it counts as a local move towards the stall
        lower = None if guided_move or whole is None else guide(top)
        if lower is not None:
            better = guided(core, lower)
        elif guided_move:
            # at the highest priority the relaxation guides well (its bound there is tight where
            # measured): a guided move that also frees the nodes chosen for the target
            better = guided(core)
        else:
            solution = optimize.solve(
                state,
                sub,
                [nodes[n] for n in sorted(chosen)],
                {n: nodes[n].free for n in chosen},
                min(left, MOVE_SECONDS),
                start,
                disruption=False,
                packer=packer,
                settle=True,
            )
            moves += 1
            better = solution.found and _levels(sub, list(solution.pods)) > _levels(sub, list(start))
            if better:
                current = {k: v for k, v in current.items() if v[0] not in chosen}
                current.update(solution.pods)
                improved += 1
        if better:
            # pods of this priority and lower may fit now; higher ones had their tries with the
            # pods of this priority movable already
            for c in [c for c in tries if c[3] <= top]:
                del tries[c]
            stalled = 0
        else:
            stalled += GUIDED_STALL_WEIGHT if guided_move else 1
            if whole is not None and stalled >= STALL_MOVES:
                # a guided move from the plan the local moves reached, unless it is where the
                # last one started; when that finds nothing either, the whole-cluster MIP runs
                if guided_from is current or not guided():
                    break
                stalled = 0
    note = f"local search: {improved} of {moves} move(s) improved the plan" if moves else ""
    if whole is not None:
        left = deadline - time.perf_counter()
        if left > 0.05:
            solution = whole.solve(left, whole.start(current))
            if solution.found and _levels(pods, list(solution.pods)) >= _levels(pods, list(current)):
                current = solution.pods
            if solution.optimal:
                return Outcome(current, True, "", moves, improved)
            note = f"{note}; " if note else ""
            return Outcome(current, False, f"{note}whole-cluster MIP: {solution.status or 'not run'}", moves, improved)
    return Outcome(current, False, note or "local search: no pending pod has a node it may use", moves, improved)


def _agreeing(values: Sequence[float], relaxed: Any) -> dict[int, float]:
    """The columns on which an integral solution and the linear relaxation agree, with their values."""
    import numpy as np

    have = np.asarray(values, dtype=np.float64)
    same = np.flatnonzero(np.abs(have - relaxed) < 1e-6)
    return dict(zip(same.tolist(), have[same].tolist(), strict=True))


def _resources(node: NodeState) -> Mapping[str, object]:
    assert node.model is not None
    return node.model.by_resource
