"""The ``best-static`` baseline: the static MIG layouts a careful operator would configure (with
NVIDIA's MIG manager) for a workload's profile mix, chosen by optimization.

Each GPU gets one *maximal* layout of its model (no instance can be added; no ``+me`` profiles),
and GPUs of a node group may get different layouts. Demand: a profile's time-averaged number of
running pods within the run's horizon if every pod ran at once on arrival (run times cut at the
horizon). An operator configures the layouts before the pods come, so ``best-static`` is given the
*known* mix (``known_demand``): what the workload's definition says in advance, not the run times
of the very pods it is then scored on (``hindsight-static`` has those, for comparison). The
mixed-integer program (HiGHS) maximises the share ``t`` of every profile's demand that
the layouts can serve at the same time (each profile gets at least ``t`` times its demand in
devices), then, with a small weight, the compute slices offered where there is demand. Serving
every profile in proportion is what keeps the largest share of the queue moving; a layout that
serves only the most common profile leaves the others waiting forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache

from nos.mig.catalog import GpuModel
from nos.mig.layout import Instance, counts, layout_errors
from nos.mig.placement import enumerate_layouts
from nos.planner.mip import new_highs
from nos.sim.scenario import Generator, NodeGroup, PodSpec, Scenario

Layout = tuple[tuple[str, int], ...]
"""Profile counts of one GPU, sorted by profile."""


@cache
def maximal_layouts(model: GpuModel) -> tuple[Layout, ...]:
    """Every profile mix of a maximal layout of ``model`` (non-``+me`` profiles), each once."""
    plain = [p for p in model.profiles.values() if not p.media]
    out: set[Layout] = set()
    for layout in enumerate_layouts(model):
        if not layout or any(model.profile(i.profile).media for i in layout):
            continue
        if any(not layout_errors(model, (*layout, Instance(s, p.name))) for p in plain for s in p.starts):
            continue  # something still fits: not maximal
        out.add(tuple(sorted(counts(layout).items())))
    return tuple(sorted(out))


def demand(pods: Sequence[PodSpec], horizon_s: float) -> dict[str, float]:
    """Profile -> mean number of its pods running within [0, horizon_s] if each ran on arrival
    (run time cut at the horizon: work past it does not count)."""
    span = max(horizon_s, 1.0)
    out: dict[str, float] = {}
    for p in pods:
        out[p.profile] = out.get(p.profile, 0.0) + max(0.0, min(p.duration_s, span - p.arrival_s)) / span
    return out


def expected_run_s(g: Generator) -> float:
    """Mean of the generator's log-uniform run time."""
    lo, hi = g.duration_min_s, g.duration_max_s
    return lo if hi <= lo else (hi - lo) / math.log(hi / lo)


def known_mix(scenario: Scenario, horizon_s: float) -> dict[str, float]:
    """The profile mix known before the run, as demand: the scenario's ``expected_mix`` if given
    (for a trace sample, the whole trace's), else the generators' expected mix (weights times mean
    run time) and the explicit pods as they are. Empty when nothing is known."""
    if scenario.expected_mix:
        return dict(scenario.expected_mix)
    out = demand(scenario.workload.pods, horizon_s)
    span = max(horizon_s, 1.0)
    for g in scenario.workload.generators:
        total = sum(s.weight for s in g.profiles)
        for s in g.profiles:
            out[s.profile] = out.get(s.profile, 0.0) + g.count * s.weight / total * expected_run_s(g) / span
    return out


def mix_shares(mix: Mapping[str, float]) -> dict[str, float]:
    """Demand as shares of the total (3 decimals), largest first: how reports show a mix."""
    total = sum(mix.values()) or 1.0
    return {p: round(w / total, 3) for p, w in sorted(mix.items(), key=lambda kv: (-kv[1], kv[0])) if w > 0}


def known_demand(scenario: Scenario, pods: Sequence[PodSpec], horizon_s: float) -> dict[str, float]:
    """``best-static``'s demand: the known mix at the run's load (its total demand: the cluster is
    sized for the load, so the operator knows it). Falls back to the pods' own demand when no mix
    is known."""
    own = demand(pods, horizon_s)
    mix = {p: w for p, w in known_mix(scenario, horizon_s).items() if w > 0}
    if not mix:
        return own
    level, total = sum(own.values()), sum(mix.values())
    return {p: level * w / total for p, w in mix.items()}


class StaticMixError(RuntimeError):
    pass


def best_static(
    groups: Sequence[NodeGroup],
    models: Mapping[str, GpuModel],
    want: Mapping[str, float],
    time_limit_s: float = 20,
) -> dict[str, list[dict[str, int]]]:
    """Node group name -> one layout (profile counts) per GPU of the group, node after node (GPU
    ``j`` of node ``i`` is entry ``i * gpus + j``); layouts are dealt across the nodes so each
    node gets a similar mix. ``want``: profile -> demand (``demand``, ``known_demand``)."""
    try:
        import highspy
        from highspy.highs import highs_linear_expression, highs_var
    except ImportError as e:  # pragma: no cover - highspy is a dependency
        raise StaticMixError("best-static needs HiGHS: pip install highspy") from e
    h = new_highs()
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("threads", 1)
    choice: dict[tuple[str, Layout], highs_var] = {}
    offered: dict[str, list[tuple[highs_var, int]]] = {}
    for g in groups:
        n = g.count * g.gpus
        xs = []
        for layout in maximal_layouts(models[g.name]):
            x = h.addIntegral(lb=0, ub=n)
            choice[(g.name, layout)] = x
            xs.append(x)
            for profile, c in layout:
                offered.setdefault(profile, []).append((x, c))
        h.addConstr(h.qsum(xs) == n)
    t = h.addVariable(lb=0)
    total = sum(g.count * g.gpus * models[g.name].compute_slices for g in groups)
    bonus: list[highs_linear_expression] = []
    for profile, d in want.items():
        terms = offered.get(profile)
        if not terms or d <= 0:
            continue
        cap = h.qsum([c * x for x, c in terms])
        h.addConstr(cap >= t * d)
        served = h.addVariable(lb=0, ub=d)  # devices of this profile that meet demand
        h.addConstr(served <= cap)
        compute = max(models[g.name].profiles[profile].compute for g in groups if profile in models[g.name].profiles)
        bonus.append(served * (compute / total / 1000))
    h.maximize(t + h.qsum(bonus) if bonus else t)
    if h.getModelStatus() not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
        raise StaticMixError(f"best-static: HiGHS ended with {h.getModelStatus()}")
    out: dict[str, list[dict[str, int]]] = {}
    for g in groups:
        chosen: list[Layout] = []
        for layout in maximal_layouts(models[g.name]):
            chosen.extend([layout] * round(h.val(choice[(g.name, layout)])))
        # deal: GPU j of node i gets the layout number j * count + i of the sorted list
        per_gpu: list[dict[str, int]] = [{} for _ in range(g.count * g.gpus)]
        for k, layout in enumerate(chosen):
            node, gpu = k % g.count, k // g.count
            per_gpu[node * g.gpus + gpu] = dict(layout)
        out[g.name] = per_gpu
    return out
