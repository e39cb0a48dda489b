"""An upper bound on the pods any plan can place, so the optimizing stage is skipped when the
greedy's plan provably cannot be beaten.

Under a sustained backlog most planning rounds find the GPUs full: no candidate fits anywhere, the
greedy places nothing, and the optimizing stage (local moves and a whole-cluster MIP) only proves
that, at a cost of tenths of a second per round (``nos simulate --trace``: 394 of 483 rounds, 80% of
nos' time). A pod can only be placed on a node that accepts it, has its cpu, memory and pod slot
free, and for each of its MIG devices has a GPU with a free instance serving it or room for a new
one next to the GPU's in-use instances. Those are necessary conditions of every plan (the
greedy's, the stage's MIP and any other), so the candidates meeting them bound what a plan places
at each priority; a plan reaching that bound at every priority while reconfiguring only the nodes
every plan reconfigures (those with a GPU without instances) has the best score there is, and the
stage could only return it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from nos.contract.pods import CandidatePod, is_mig_resource
from nos.kube.views.objects import POD_COUNT, SchedulingClass
from nos.mig.packing import Packer
from nos.planner.cluster import ClusterState, NodeState
from nos.planner.eligibility import Eligibility


def open_resources(node: NodeState, packer: Packer) -> frozenset[str]:
    """MIG resources one more device of which could go on ``node`` if nothing else were placed."""
    model = node.model
    if node.frozen or model is None:
        return frozenset()
    out: set[str] = set()
    for gpu in node.gpus:
        if gpu.frozen:
            continue
        out.update(model.profile(i.profile).resource for i in gpu.free)
        for resource in model.by_resource:
            if resource in out:
                continue
            profile = model.profile_for_resource(resource)
            if profile is not None and packer.feasible(model, gpu.used, (profile.name,), gpu.blocked):
                out.add(resource)
    return frozenset(out)


def placeable(
    state: ClusterState, packer: Packer, eligibility: Eligibility | None = None
) -> tuple[Counter[int], frozenset[str]]:
    """Per priority, how many candidates meet the necessary conditions of a placement (see the
    module docstring), and the MIG resources those pods ask for. ``eligibility`` is over
    ``state.nodes`` in order."""
    nodes = list(state.nodes.values())
    eligibility = eligibility or Eligibility([n.info for n in nodes])
    opened = [open_resources(n, packer) for n in nodes]
    hosts: dict[tuple[SchedulingClass, frozenset[str]], list[NodeState]] = {}
    fits: dict[tuple[SchedulingClass, frozenset[str], tuple[tuple[str, int], ...]], bool] = {}
    out: Counter[int] = Counter()
    asked: set[str] = set()
    for pod in state.candidates:
        if pod.mig_problem:
            continue
        devices = frozenset(pod.mig_devices)
        where = hosts.get((pod.scheduling_class, devices))
        if where is None:
            where = hosts[(pod.scheduling_class, devices)] = [
                nodes[i] for i in eligibility.of(pod.scheduling_class) if devices <= opened[i]
            ]
        if not where:
            continue
        requests = _requests(pod)
        key = (pod.scheduling_class, devices, requests)
        ok = fits.get(key)
        if ok is None:
            ok = fits[key] = any(
                n.free.get(POD_COUNT, 0) >= 1 and all(n.free.get(r, 0) >= q for r, q in requests) for n in where
            )
        if ok:
            out[pod.priority] += 1
            asked |= devices
    return out, frozenset(asked)


def capacity(state: ClusterState, resources: frozenset[str]) -> int:
    """The most MIG devices of ``resources`` that fit the GPUs at once next to their in-use instances:
    per GPU, its free compute slices (and memory slots) over the fewest any of them takes."""
    total = 0
    smallest: dict[str, tuple[int, int] | None] = {}
    for node in state.nodes.values():
        model = node.model
        if node.frozen or model is None:
            continue
        if model.name not in smallest:
            sizes = [(p.compute, p.slots) for r in resources if (p := model.profile_for_resource(r)) is not None]
            smallest[model.name] = (min(c for c, _ in sizes), min(s for _, s in sizes)) if sizes else None
        least = smallest[model.name]
        if least is None:
            continue
        for gpu in node.gpus:
            if gpu.frozen:
                continue
            used = [model.profile(i.profile) for i in gpu.used]
            compute = model.compute_slices - sum(p.compute for p in used)
            slots = model.memory_slots - sum(p.slots for p in used)
            total += max(0, min(compute // max(least[0], 1), slots // max(least[1], 1)))
    return total


def always_changed(state: ClusterState) -> int:
    """Managed nodes every plan reconfigures: those with a GPU that has no instance yet."""
    return sum(
        1
        for n in state.nodes.values()
        if not n.frozen and n.model is not None and any(not g.instances and not g.frozen for g in n.gpus)
    )


class Bound:
    """Whether a plan has the best score any plan can have (``_Planning.score``: pods placed per
    priority, then fewer reconfigured nodes); the bound is worked out once, on first use."""

    def __init__(self, state: ClusterState, packer: Packer, eligibility: Eligibility | None = None) -> None:
        self.state, self.packer, self.eligibility = state, packer, eligibility
        self._placeable: Counter[int] | None = None
        self._changed: int | None = None
        self._capacity = 0
        self._priority = {p.key: p.priority for p in state.candidates}

    def met(self, placed: Sequence[str], changed_nodes: int) -> bool:
        """For a plan placing the candidates ``placed`` (pod keys) and reconfiguring ``changed_nodes``
        nodes. Priorities are compared from the highest: a plan beating this one places as many at
        each higher priority and more at the first that differs, which neither the candidates meeting
        the conditions nor the devices left to place (``capacity``, less those of the higher
        priorities) allow when this one reaches both."""
        if self._changed is None:
            self._changed = always_changed(self.state)
        if changed_nodes > self._changed:
            return False
        if self._placeable is None:
            counts, resources = placeable(self.state, self.packer, self.eligibility)
            self._placeable = counts
            self._capacity = capacity(self.state, resources) if counts else 0
        got = Counter(self._priority[k] for k in placed)
        left = self._capacity
        for priority in sorted(self._placeable, reverse=True):
            if got[priority] < min(self._placeable[priority], left):
                return False
            left -= got[priority]
        return True


def _requests(pod: CandidatePod) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
