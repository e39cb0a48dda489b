"""An independent check of a plan against the cluster it was made for.

It shares no search code with the planner: layouts are checked with the plain slot rules of
``nos.mig.layout.layout_errors``, and every claim of the plan (pods placed, resources, spec
annotations) is recounted from scratch. ``nos plan`` runs it on every plan it prints, the tests
and benchmarks on every plan they make.

Failures are judged per node (``node_errors``): ``isolate_failures`` leaves a node whose part of the
plan is wrong out of it (not written, its pods unplaced) and only a failure that concerns no single
node stops the whole plan. One bad node must never stop the cluster.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from nos.contract.annotations import decode_spec, is_spec_key
from nos.contract.pods import is_mig_resource
from nos.kube.views.objects import POD_COUNT
from nos.kube.views.scheduling import node_refusal
from nos.mig.layout import layout_errors, occupied_mask
from nos.planner.cluster import ClusterState
from nos.planner.plan import Plan, Unplaced

ANNOTATIONS_LIMIT_BYTES = 256 * 1024
"""The apiserver's limit on the total size of one object's annotations (keys + values)."""
CLUSTER = ""
"""``node_errors`` key of the failures that concern no single node."""


def check_plan(state: ClusterState, plan: Plan) -> list[str]:
    """Every way ``plan`` is wrong for ``state``; empty when it is sound."""
    return [e for errors in node_errors(state, plan).values() for e in errors]


def node_errors(state: ClusterState, plan: Plan) -> dict[str, list[str]]:
    """The check's failures by node name (``CLUSTER`` for the rest); only keys with failures."""
    out: dict[str, list[str]] = {}
    if set(plan.nodes) != set(state.nodes):
        out[CLUSTER] = ["the plan does not cover exactly the managed nodes"]
    for name in plan.nodes:
        errors = _node_errors(state, plan, name)
        if errors:
            out[name] = errors
    for node, error in _check_pods(state, plan):
        out.setdefault(node, []).append(error)
    return out


def isolate_failures(state: ClusterState, plan: Plan) -> list[str]:
    """Leave every node whose part of ``plan`` fails the check out of it: not written, its spec as
    it is, its pods unplaced, the reason in ``plan.problems``. Returns what still fails (failures no
    node isolation can fix: then the plan must not be written at all); empty when the rest is sound."""
    errors = node_errors(state, plan)
    if CLUSTER in errors or not errors:
        return [e for es in errors.values() for e in es]
    for name, why in sorted(errors.items()):
        reason = f"node {name}: the plan for it failed its check ({why[0]}); left as it is"
        plan.problems.append(reason)
        np, ns = plan.nodes.get(name), state.nodes.get(name)
        if np is not None and ns is not None:
            np.write = False
            np.annotations = dict(ns.current_spec_annotations)
            np.frozen = reason
            np.gpus = [replace(g, planned=g.current) for g in np.gpus]
        moved = [p for p in plan.placed if p.node == name and not p.existing]
        plan.placed = [p for p in plan.placed if p not in moved]
        plan.unplaced += [Unplaced(p.pod, f"node {name} was left out of the plan: {why[0]}") for p in moved]
    return check_plan(state, plan)


def annotations_size(annotations: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def _node_errors(state: ClusterState, plan: Plan, name: str) -> list[str]:
    errors: list[str] = []
    np = plan.nodes[name]
    ns = state.nodes.get(name)
    if ns is None:
        return errors
    if ns.frozen or ns.model is None or np.frozen:
        if np.write:
            errors.append(f"{name}: frozen node would be written")
        if any(g.changed for g in np.gpus):
            errors.append(f"{name}: frozen node's layout changes")
        return errors
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
    frozen = {g.index for g in np.gpus if g.frozen}
    # a frozen GPU keeps its (malformed) spec verbatim; only what the plan writes must decode
    bad = [p for p in spec.problems if p.gpu is None or p.gpu not in frozen]
    if bad:
        errors.append(f"{name}: planned annotations do not decode: {bad[0]}")
    for g in np.gpus:
        if g.frozen:
            continue
        want = Counter(i.profile for i in g.planned)
        got = spec.gpus[g.index].profile_counts() if g.index in spec.gpus else Counter()
        if +got != want:
            errors.append(f"{name} GPU {g.index}: spec annotations {dict(got)} != planned {dict(want)}")
    if np.write:
        others = {k: v for k, v in ns.info.annotations.items() if not is_spec_key(k)}
        size = annotations_size({**others, **np.annotations})
        if size > ANNOTATIONS_LIMIT_BYTES:
            errors.append(f"{name}: its annotations would be {size} bytes, over the {ANNOTATIONS_LIMIT_BYTES} limit")
    return errors


def _check_pods(state: ClusterState, plan: Plan) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    candidates = {p.key: p for p in state.candidates}
    seen = Counter([p.pod for p in plan.placed] + [u.pod for u in plan.unplaced])
    if set(seen) != set(candidates) or any(n > 1 for n in seen.values()):
        errors.append((CLUSTER, "placed + unplaced is not every candidate exactly once"))
    demand: Counter[tuple[str, int, str]] = Counter()
    used_resources: dict[str, Counter[str]] = {}
    for p in plan.placed:
        pod = candidates.get(p.pod)
        ns = state.nodes.get(p.node)
        if pod is None or ns is None or ns.model is None:
            errors.append((CLUSTER, f"{p.pod}: placed on unknown node {p.node} or not a candidate"))
            continue
        refusal = node_refusal(pod.scheduling_class, ns.info)
        if refusal is not None:
            errors.append((p.node, f"{p.pod}: node {p.node} refuses it: {refusal}"))
        if pod.mig_problem or any(ns.model.profiles.get(d.profile) is None for d in p.devices):
            errors.append((p.node, f"{p.pod}: placed although its MIG request is not servable"))
            continue
        got = tuple(sorted(ns.model.profile(d.profile).resource for d in p.devices))
        if got != pod.mig_devices:
            errors.append((p.node, f"{p.pod}: asks {', '.join(pod.mig_devices)} but is placed on {', '.join(got)}"))
        for d in p.devices:
            demand[(p.node, d.gpu, ns.model.profile(d.profile).resource)] += 1
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
            errors.append((node, f"{node} GPU {gpu}: {n} pods placed on {free} free {resource} instance(s)"))
    for node, counter in used_resources.items():
        free_resources = state.nodes[node].free
        for r, n in counter.items():
            if n > free_resources.get(r, 0):
                errors.append((node, f"{node}: pods placed need {n} {r}, only {free_resources.get(r, 0)} free"))
    return errors
