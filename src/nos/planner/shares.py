"""Capacity held for each MIG profile in proportion to its demand, so one busy profile cannot take
every GPU.

kube-scheduler hands a device that frees up straight to the next pending pod *of its profile*, and
the planner shapes idle capacity for the pods pending *now*. Under a backlog of one profile (whole
GPUs, say) the two together ratchet the cluster towards it: whenever the smaller devices of a GPU
happen to be idle, the GPU is rebuilt for the backlog, and it stays so while the backlog lasts. Pods
of the other profiles that arrive later wait for the whole backlog to clear (measured in
``nos simulate``: docs/simulate.md, "Profile shares").

So the planner is also given *holds*: stand-in candidates for the devices a profile lacks to reach
its share. A profile's demand is the compute slices of its devices in use plus those its pending pods
ask for; its share of the cluster's compute slices is ``weight`` times its share of the demand of
all profiles (what a static mix chosen for the workload gives each profile, measured at every plan
instead of guessed in advance). A profile below its share gets holds for what it lacks, but for
no more devices than it has (in use plus pending: repeated plans while a pod waits for its device
must not reshape a whole idle cluster, one device per plan, for the mix of a handful of pods):

* first one per free device of it that its own pending pods leave, ranked above every pod: the
  planner keeps those devices instead of rebuilding them for another profile's pods;
* then new devices, ranked below every pod: slots no pending pod can use are shaped for it.

A hold never delays a pod for a device that does not exist yet, and a profile at or above its
share gets none.

An operator who knows the workload's profile mix can give it (``mix``, ``profileMix``): the shares
then follow that mix instead of the demand measured now, every hold is ranked below every pod (the
mix is long-run knowledge: it shapes capacity no pending pod wants, and never keeps a device from a
pod pending now), and a profile of the mix with nothing running or pending gets one device. In
``nos simulate`` this is what best-static is given, and on the shipped trace it lowered nos' mean
pending time most at light load (docs/simulate.md, "Profile shares").

Holds are a pure function of the cluster state (and the configured mix), like the rest of the
planner's input; the plan reports them apart (``Plan.held``, ``Plan.shares``): they are never
written, bound to or told about as pods. Off by default (``nos.config.PROFILE_SHARES``): with the
measured demand they pay where the profile mix holds steady under a backlog and cost workloads
whose mix moves from burst to burst.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

from nos.contract.pods import CandidatePod
from nos.kube.views.objects import SchedulingClass, Toleration
from nos.kube.views.scheduling import UNSCHEDULABLE_TAINT
from nos.mig.catalog import MIG_RESOURCE_PREFIX, Catalog
from nos.planner.cluster import ClusterState
from nos.planner.plan import Plan, Share

HOLD_NAMESPACE = "nos.nebuly.ai"
"""Holds' namespace: a namespace name cannot contain dots, so no pod's key is ever a hold's."""
MAX_HOLDS = 512
"""At most this many holds per plan (those on existing devices first): enough for every free device
of a few hundred GPUs, and a bounded cost for the planner on clusters of thousands."""


def unknown_profiles(catalog: Catalog, mix: Mapping[str, float]) -> list[str]:
    """Profiles of ``mix`` that no model of ``catalog`` offers (they would be ignored)."""
    return sorted(p for p in mix if MIG_RESOURCE_PREFIX + p not in catalog.resources)


def expected(mix: Mapping[str, float] | None) -> dict[str, float]:
    """MIG resource -> weight of the profiles ``mix`` gives a weight: empty means the shares follow
    the measured demand (and free devices are kept above pods), whatever else ``mix`` holds."""
    return {MIG_RESOURCE_PREFIX + p: w for p, w in (mix or {}).items() if w > 0}


def is_hold(key: str) -> bool:
    return key.startswith(HOLD_NAMESPACE + "/")


def shares(state: ClusterState, weight: float, mix: Mapping[str, float] | None = None) -> list[Share]:
    """Each MIG resource's demand, target and holds (resources with no demand and not in ``mix``, a
    MIG profile -> relative demand, are left out)."""
    if weight <= 0:
        return []
    size = state.catalog.resource_size
    in_use: Counter[str] = Counter()
    free: Counter[str] = Counter()
    slices = 0
    for ns in state.nodes.values():
        in_use.update(ns.bound_mig)
        for gs in ns.gpus:
            slices += gs.model.compute_slices
            if not (ns.frozen or gs.frozen):
                free.update(MIG_RESOURCE_PREFIX + i.profile for i in gs.instances if not i.used)
    pending: Counter[str] = Counter(r for p in state.candidates if not p.mig_problem for r in p.mig_devices)
    have = in_use + pending
    weights = expected(mix)
    compute = {r: s[0] for r in {*have, *weights} if (s := size(r)) is not None}
    demand = {r: have[r] * c for r, c in compute.items()}
    # what the targets follow: the measured demand, or the expected mix (in compute slices)
    basis = {r: weights[r] * c for r, c in compute.items() if r in weights} if weights else demand
    total = sum(basis.values())
    if not total:
        return []
    out = []
    for resource, asked in sorted(demand.items()):
        target = int(weight * basis.get(resource, 0) / total * slices / compute[resource])
        lacking = max(0, target - have[resource])
        # at most as many held as it has: repeated plans while its pods wait must not reshape the
        # whole idle cluster one device at a time; its pending pods get their free devices first
        held = min(lacking, max(have[resource], 1 if weights else 0))
        kept = min(held, max(0, free[resource] - pending[resource]))
        out.append(Share(resource, asked, target, have[resource], kept, held - kept))
    return out


def with_holds(
    state: ClusterState, weight: float, mix: Mapping[str, float] | None = None
) -> tuple[ClusterState, list[Share]]:
    """``state`` with the holds of ``shares`` among its candidates (the same state when none)."""
    standings = shares(state, weight, mix) if state.candidates else []
    if not any(s.kept or s.wanted for s in standings):
        return state, standings
    priorities = [p.priority for p in state.candidates]
    above, below = max(priorities) + 1, min(priorities) - 1
    anywhere = _anywhere(state)
    kept_rank = below if expected(mix) else above  # an expected mix never keeps a device from a pod
    ranked = [(kept_rank, s) for s in standings for _ in range(s.kept)]
    ranked += [(below, s) for s in standings for _ in range(s.wanted)]
    holds = [_hold(share, rank, i, anywhere) for i, (rank, share) in enumerate(ranked[:MAX_HOLDS])]
    state = replace(state, candidates=[*state.candidates, *holds], candidate_keys=None)
    return state, standings


def _anywhere(state: ClusterState) -> SchedulingClass:
    """Every taint of the managed nodes tolerated, but not a cordon: capacity is held where pods of
    any kind may come, not on a node being drained."""
    taints = {(t.key, t.effect) for ns in state.nodes.values() for t in ns.info.taints}
    taints.discard((UNSCHEDULABLE_TAINT.key, UNSCHEDULABLE_TAINT.effect))
    return SchedulingClass(tolerations=tuple(Toleration(k, "Exists", None, e) for k, e in sorted(taints)))


def _hold(share: Share, priority: int, index: int, anywhere: SchedulingClass) -> CandidatePod:
    return CandidatePod(
        namespace=HOLD_NAMESPACE,
        name=f"hold-{index}-{share.profile}",
        priority=priority,
        created="",
        node_name=None,
        phase="Pending",
        requests={share.resource: 1},
        scheduling_class=anywhere,
        unschedulable=True,
        mig_devices=(share.resource,),
    )


def apart(plan: Plan, standings: list[Share]) -> Plan:
    """``plan`` with its holds moved from the pods to ``held``, and the standings attached."""
    plan.held = [p for p in plan.placed if is_hold(p.pod)]
    plan.placed = [p for p in plan.placed if not is_hold(p.pod)]
    plan.unplaced = [u for u in plan.unplaced if not is_hold(u.pod)]
    plan.shares = standings
    return plan
