"""An independent check of a plan against the cluster it was made for.

It shares no search code with the planner: layouts are checked with the plain slot rules of
``nos.mig.layout.layout_errors``, and every claim of the plan (pods placed, resources, spec
annotations) is recounted from scratch. ``nos plan`` runs it on every plan it prints, the tests
and benchmarks on every plan they make.
"""

from __future__ import annotations

from collections import Counter

from nos.contract.annotations import decode_spec
from nos.kube.objects import POD_COUNT, is_mig_resource
from nos.kube.scheduling import placement_refusal
from nos.mig.layout import layout_errors, occupied_mask
from nos.planner.cluster import ClusterState
from nos.planner.plan import Plan


def check_plan(state: ClusterState, plan: Plan) -> list[str]:
    """Every way ``plan`` is wrong for ``state``; empty when it is sound."""
    errors: list[str] = []
    if set(plan.nodes) != set(state.nodes):
        errors.append("the plan does not cover exactly the managed nodes")
    for name, np in plan.nodes.items():
        ns = state.nodes.get(name)
        if ns is None:
            continue
        if ns.frozen or ns.model is None or np.frozen:
            if np.write:
                errors.append(f"{name}: frozen node would be written")
            if any(g.changed for g in np.gpus):
                errors.append(f"{name}: frozen node's layout changes")
            continue
        model = ns.model
        current = {g.index: g for g in ns.gpus}
        for g in np.gpus:
            where = f"{name} GPU {g.index}"
            gs = current.get(g.index)
            if gs is None:
                errors.append(f"{where}: not a GPU of the node")
                continue
            if gs.frozen and g.changed:
                errors.append(f"{where}: frozen GPU changes")
            errors.extend(f"{where}: {e}" for e in layout_errors(model, g.planned))
            planned_at = {(i.profile, i.start) for i in g.planned}
            for used in gs.used:
                if (used.profile, used.start) not in planned_at:
                    errors.append(f"{where}: in-use {used} removed or moved")
            current_at = {(i.profile, i.start) for i in gs.instances}
            new = [i for i in g.planned if (i.profile, i.start) not in current_at]
            if occupied_mask(model, new) & gs.blocked:
                errors.append(f"{where}: a new instance overlaps slots an in-use instance may occupy")
        spec = decode_spec(np.annotations)
        if spec.problems:
            errors.append(f"{name}: planned annotations do not decode: {spec.problems[0]}")
        for g in np.gpus:
            if g.frozen:
                continue
            want = Counter(i.profile for i in g.planned)
            got = spec.gpus[g.index].profile_counts() if g.index in spec.gpus else Counter()
            if +got != want:
                errors.append(f"{name} GPU {g.index}: spec annotations {dict(got)} != planned {dict(want)}")
    errors.extend(_check_pods(state, plan))
    return errors


def _check_pods(state: ClusterState, plan: Plan) -> list[str]:
    errors: list[str] = []
    candidates = {p.key: p for p in state.candidates}
    seen = Counter([p.pod for p in plan.placed] + [u.pod for u in plan.unplaced])
    if set(seen) != set(candidates) or any(n > 1 for n in seen.values()):
        errors.append("placed + unplaced is not every candidate exactly once")
    demand: Counter[tuple[str, int, str]] = Counter()
    used_resources: dict[str, Counter[str]] = {}
    for p in plan.placed:
        pod = candidates.get(p.pod)
        ns = state.nodes.get(p.node)
        if pod is None or ns is None or ns.model is None:
            errors.append(f"{p.pod}: placed on unknown node {p.node} or not a candidate")
            continue
        if placement_refusal(pod.placement, ns.info) is not None:
            errors.append(f"{p.pod}: node {p.node} refuses it: {placement_refusal(pod.placement, ns.info)}")
        resource = pod.mig_resource
        if resource is None or ns.model.profiles.get(p.profile) is None:
            errors.append(f"{p.pod}: placed although its MIG request is not servable")
            continue
        if ns.model.profile(p.profile).resource != resource:
            errors.append(f"{p.pod}: asks {resource} but is placed on {p.profile}")
        demand[(p.node, p.gpu, resource)] += 1
        counter = used_resources.setdefault(p.node, Counter())
        for r, n in pod.requests.items():
            if not is_mig_resource(r):
                counter[r] += n
        counter[POD_COUNT] += 1
    for (node, gpu, resource), n in demand.items():
        np = plan.nodes[node]
        model = state.nodes[node].model
        assert model is not None
        layouts = [g for g in np.gpus if g.index == gpu]
        free = sum(
            1
            for i in (layouts[0].planned if layouts else ())
            if not i.used and model.profile(i.profile).resource == resource
        )
        if n > free:
            errors.append(f"{node} GPU {gpu}: {n} pods placed on {free} free {resource} instance(s)")
    for node, counter in used_resources.items():
        free_resources = state.nodes[node].free
        for r, n in counter.items():
            if n > free_resources.get(r, 0):
                errors.append(f"{node}: pods placed need {n} {r}, only {free_resources.get(r, 0)} free")
    return errors
