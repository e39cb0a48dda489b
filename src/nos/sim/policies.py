"""The partitioning policies compared by ``nos simulate``.

* ``ideal``: GPUs as pools of compute and memory slices, no placement rules, layouts that change
  instantly (``nos.sim.pool``): the limit no MIG partitioner can beat on the same arrivals and
  scheduling order.
* ``best-static``: per-GPU static layouts chosen by optimization for the workload's profile mix
  (``nos.sim.static_mix``); no partitioner runs.
* ``whole-gpu``: no MIG; one pod per GPU.
* ``static``: every GPU keeps the scenario's fixed ``static_layout``; no partitioner runs.
* ``nos``: the production ``Partitioner`` with nos' planner (its default).
* ``greedy``: the same ``Partitioner`` with the original nos' planner (``nos.sim.greedy``) as its
  ``PlanFunction``. The original is blind to placements, so some GPU layouts it plans cannot be
  reached without moving in-use instances; nos' partitioner refuses to write any plan that fails
  ``check_plan``. The original's agent would apply what it can of such a layout, so the adapter keeps
  those GPUs as they are (their pods stay pending, to be planned again in the next batch) and hands the
  rest of the greedy plan to the partitioner, which checks it like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nos.contract.annotations import SPEC_PLAN, encode_spec
from nos.mig.catalog import default_catalog
from nos.mig.packing import Geometry
from nos.partitioner.controller import PlanFunction
from nos.planner.checker import check_plan
from nos.planner.cluster import ClusterState
from nos.planner.plan import GpuPlan, NodePlan, Plan, Unplaced
from nos.sim.greedy import plan_greedy_state, reachable_gpus
from nos.sim.scenario import PodSpec, Scenario, run_end
from nos.sim.static_mix import best_static, demand, known_demand

log = logging.getLogger(__name__)

POOL_POLICIES = ("ideal", "whole-gpu")
"""GPUs are pools of slices; no MIG instance, device plugin, agent or partitioner."""
STATIC_POLICIES = ("static", "best-static", "hindsight-static")
"""MIG layouts fixed for the whole run; agents run, no partitioner."""


def static_layouts(
    scenario: Scenario, pods: Sequence[PodSpec], hindsight: bool = False
) -> dict[str, list[dict[str, int]]]:
    """``best-static``'s layouts (``hindsight-static``'s with ``hindsight``): node group -> one
    layout per GPU (see ``nos.sim.static_mix``)."""
    catalog = default_catalog()
    models = {g.name: catalog.model(g.model) for g in scenario.nodes}
    horizon = run_end(scenario, pods)
    want = demand(pods, horizon) if hindsight else known_demand(scenario, pods, horizon)
    return best_static(scenario.nodes, models, want)


@dataclass
class GreedyStats:
    plans: int = 0
    gpus_kept: int = 0
    """Planned GPU layouts left unapplied because they were unreachable."""


def greedy_planner(
    geometries: Mapping[str, Sequence[Geometry]] | None = None, stats: GreedyStats | None = None
) -> PlanFunction:
    """The original nos' planner as a ``PlanFunction`` (see the module docstring)."""
    counters = stats if stats is not None else GreedyStats()

    def plan(state: ClusterState, plan_id: str) -> Plan:
        counters.plans += 1
        raw = plan_greedy_state(state, geometries=geometries, plan_id=plan_id)
        if not check_plan(state, raw):
            return raw
        return _keep_unreachable(state, raw, counters)

    return plan


def _keep_unreachable(state: ClusterState, plan: Plan, stats: GreedyStats) -> Plan:
    ok = reachable_gpus(state, plan)
    nodes: dict[str, NodePlan] = {}
    for name, node in plan.nodes.items():
        gpus = []
        for g in node.gpus:
            if g.changed and (name, g.index) not in ok:
                stats.gpus_kept += 1
                gpus.append(GpuPlan(g.index, g.model, g.current, g.current, g.frozen))
            else:
                gpus.append(g)
        if node.frozen or gpus == node.gpus:
            nodes[name] = node
            continue
        current = state.nodes[name].current_spec_annotations
        desired = encode_spec({g.index: [i.freed() for i in g.planned] for g in gpus}, None)
        write = desired != {k: v for k, v in current.items() if k != SPEC_PLAN}
        annotations = {**desired, SPEC_PLAN: plan.plan_id} if write else dict(current)
        nodes[name] = NodePlan(name, gpus, annotations, write)
    placed = [p for p in plan.placed if (p.node, p.gpu) in ok]
    dropped = [
        Unplaced(p.pod, "the original greedy planned an unreachable layout for it")
        for p in plan.placed
        if p not in placed
    ]
    return Plan(plan.plan_id, nodes, placed, [*plan.unplaced, *dropped], plan.problems)
