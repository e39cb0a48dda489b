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

from nos.kube.objects import POD_COUNT, Placement, PodInfo, is_mig_resource
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


def placeable(state: ClusterState, packer: Packer, eligibility: Eligibility | None = None) -> Counter[int]:
    """Per priority, how many candidates meet the necessary conditions of a placement (see the
    module docstring): no plan places more. ``eligibility`` is over ``state.nodes`` in order."""
    nodes = list(state.nodes.values())
    eligibility = eligibility or Eligibility([n.info for n in nodes])
    opened = [open_resources(n, packer) for n in nodes]
    hosts: dict[tuple[Placement, frozenset[str]], list[NodeState]] = {}
    fits: dict[tuple[Placement, frozenset[str], tuple[tuple[str, int], ...]], bool] = {}
    out: Counter[int] = Counter()
    for pod in state.candidates:
        if pod.mig_problem:
            continue
        devices = frozenset(pod.mig_devices)
        where = hosts.get((pod.placement, devices))
        if where is None:
            where = hosts[(pod.placement, devices)] = [
                nodes[i] for i in eligibility.of(pod.placement) if devices <= opened[i]
            ]
        if not where:
            continue
        requests = _requests(pod)
        key = (pod.placement, devices, requests)
        ok = fits.get(key)
        if ok is None:
            ok = fits[key] = any(
                n.free.get(POD_COUNT, 0) >= 1 and all(n.free.get(r, 0) >= q for r, q in requests) for n in where
            )
        if ok:
            out[pod.priority] += 1
    return out


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
        self._priority = {p.key: p.priority for p in state.candidates}

    def met(self, placed: Sequence[str], changed_nodes: int) -> bool:
        """For a plan placing the candidates ``placed`` (pod keys) and reconfiguring ``changed_nodes`` nodes."""
        if self._changed is None:
            self._changed = always_changed(self.state)
        if changed_nodes > self._changed:
            return False
        if self._placeable is None:
            self._placeable = placeable(self.state, self.packer, self.eligibility)
        got = Counter(self._priority[k] for k in placed)
        return all(got[p] >= n for p, n in self._placeable.items())


def _requests(pod: PodInfo) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
