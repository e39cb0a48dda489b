"""The exact optimum of one planning round, as a mixed-integer program solved by HiGHS.

Maximises the candidate pods made schedulable, higher priorities first (lexicographically: the
pods of the highest priority, then, holding that, the next, ... with ``nos.planner.mip``), subject
to exactly the rules nos' checker enforces:

* per GPU: used instances stay; each existing free instance is kept or destroyed (binary); new
  instances are binaries per (profile, start) off the slots in-use instances may occupy; memory
  slots are covered at most once; per-profile maximum counts, compute slices, one media owner;
* per node and MIG resource: devices of the pods placed <= free instances serving it (new or kept)
  on its GPUs (any pod on a node may use any of its GPUs, so pods are assigned to nodes, not GPUs;
  a pod with several devices gets them all on one node or is not placed);
* per node: cpu, memory, ... and pod count within what is free; eligibility by
  ``node_refusal``;
* identical pods (resource, other requests, scheduling class, priority) form one class with an
  integer count per node, which keeps the model small.

``solve`` returns "optimal", or "time limit" (then the numbers are those of the best solution
found, not the optimum, and benchmarks skip the instance).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nos.contract.annotations import encode_spec
from nos.contract.pods import is_mig_resource
from nos.kube.views.objects import POD_COUNT, SchedulingClass
from nos.kube.views.scheduling import node_refusal
from nos.mig.catalog import GpuModel
from nos.mig.layout import Instance
from nos.planner.cluster import ClusterState, GpuState
from nos.planner.mip import Mip, capacity_row, lexicographic
from nos.planner.plan import Device, GpuPlan, NodePlan, Placed, Plan, Unplaced

_Class = tuple[tuple[str, ...], tuple[tuple[str, int], ...], SchedulingClass, int]
"""(MIG devices, other requests, scheduling class, priority)."""


@dataclass
class ExactResult:
    status: str
    """"optimal", "time limit", or another HiGHS model status."""
    placed: int
    """Pods placed by the best solution found."""
    placed_by_priority: dict[int, int]
    seconds: float
    variables: int = 0
    constraints: int = 0
    problems: list[str] = field(default_factory=list)
    plan: Plan | None = None
    """The solution as a plan (for ``check_plan``), when one was found."""

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"


class _GpuRows:
    """The variables and constraints of one GPU's layout."""

    def __init__(self, m: Mip, gs: GpuState, model: GpuModel, capacity: dict[str, list[tuple[int, float]]]) -> None:
        self.m, self.gs, self.model, self.capacity = m, gs, model, capacity
        self.chosen: list[tuple[int, Instance]] = []
        """(variable, instance): the instance is in the planned layout when the variable is 1."""
        self.slots: dict[int, list[tuple[int, float]]] = {s: [] for s in range(model.memory_slots)}
        self.counts: dict[str, list[tuple[int, float]]] = {}
        self.compute: list[tuple[int, float]] = []
        self.media: list[tuple[int, float]] = []

    def add(self, var: int, profile: str, start: int) -> None:
        self.chosen.append((var, Instance(start, profile)))
        p = self.model.profile(profile)
        for s in range(start, start + p.slots):
            self.slots[s].append((var, 1.0))
        self.counts.setdefault(profile, []).append((var, 1.0))
        self.compute.append((var, float(p.compute)))
        if p.media:
            self.media.append((var, 1.0))
        self.capacity.setdefault(p.resource, []).append((var, 1.0))

    def build(self) -> None:
        m, gs, model = self.m, self.gs, self.model
        used_mask = 0
        for i in gs.used:
            used_mask |= model.profile(i.profile).mask(i.start)
        for inst in gs.free:  # keep (1) or destroy (0); a frozen GPU keeps everything
            self.add(m.var(1.0, lower=1.0 if gs.frozen else 0.0), inst.profile, inst.start)
        if not gs.frozen:
            for p in model.profiles.values():
                if p.media:  # a +me instance serves nothing its plain profile does not
                    continue
                for s in p.starts:
                    if not p.mask(s) & (used_mask | gs.blocked):
                        self.add(m.var(1.0), p.name, s)
        for s, terms in self.slots.items():
            if terms:
                m.row(terms, 0.0 if used_mask >> s & 1 else 1.0)
        used_counts = Counter(i.profile for i in gs.used)
        for profile, terms in self.counts.items():
            m.row(terms, float(model.profile(profile).max_count - used_counts[profile]))
        used_compute = sum(model.profile(i.profile).compute for i in gs.used)
        if self.compute:
            m.row(self.compute, float(model.compute_slices - used_compute))
        if self.media:
            m.row(self.media, float(1 - sum(model.profile(i.profile).media for i in gs.used)))


def solve(state: ClusterState, time_limit: float = 60.0) -> ExactResult:
    """The most candidate pods (higher priorities first) any plan could make schedulable."""
    started = time.perf_counter()
    m = Mip()
    classes: Counter[_Class] = Counter()
    problems: list[str] = []
    for pod in state.candidates:
        if not pod.mig_devices or pod.mig_problem:
            continue
        requests = tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
        classes[(pod.mig_devices, requests, pod.scheduling_class, pod.priority)] += 1
    objectives: dict[int, dict[int, float]] = {prio: {} for prio in sorted({c[3] for c in classes}, reverse=True)}
    placed_vars: dict[_Class, list[int]] = {c: [] for c in classes}
    gpu_vars: dict[tuple[str, int], list[tuple[int, Instance]]] = {}
    node_vars: dict[str, list[tuple[_Class, int]]] = {}
    for ns in state.nodes.values():
        model = ns.model
        if ns.frozen or model is None:
            continue
        capacity: dict[str, list[tuple[int, float]]] = {}
        for gs in ns.gpus:
            gpu = _GpuRows(m, gs, model, capacity)
            gpu_vars[(ns.name, gs.index)] = gpu.chosen
            gpu.build()
        node_terms: dict[str, list[tuple[int, int]]] = {}
        by_resource: dict[str, list[tuple[int, float]]] = {}
        for cls, n in classes.items():
            devices, requests, scheduling_class, priority = cls
            if any(r not in capacity for r in devices) or node_refusal(scheduling_class, ns.info) is not None:
                continue
            y = m.var(float(n))
            objectives[priority][y] = 1.0
            placed_vars[cls].append(y)
            node_vars.setdefault(ns.name, []).append((cls, y))
            for resource, k in Counter(devices).items():
                by_resource.setdefault(resource, []).append((y, float(k)))
            for r, amount in requests:
                node_terms.setdefault(r, []).append((y, amount))
            node_terms.setdefault(POD_COUNT, []).append((y, 1))
        for resource, terms in by_resource.items():
            m.row(terms + [(v, -c) for v, c in capacity[resource]], 0.0)
        for r, amounts in node_terms.items():
            m.row(*capacity_row(amounts, ns.free.get(r, 0)))
    for cls, ys in placed_vars.items():
        if len(ys) > 1:
            m.row([(y, 1.0) for y in ys], float(classes[cls]))
    bounds = [float(sum(n for c, n in classes.items() if c[3] == prio)) for prio in objectives]
    solved = m.solve(
        lexicographic(list(objectives.values()), bounds), max(1.0, time_limit - (time.perf_counter() - started))
    )
    status, values = solved.status, solved.values
    by_priority: Counter[int] = Counter()
    for cls, ys in placed_vars.items():
        by_priority[cls[3]] += round(sum(values[y] for y in ys))
    solution = _plan(state, values, gpu_vars, node_vars) if solved.found else None
    return ExactResult(
        status,
        sum(by_priority.values()),
        dict(sorted(by_priority.items(), reverse=True)),
        time.perf_counter() - started,
        m.columns,
        m.rows,
        problems,
        solution,
    )


def _plan(
    state: ClusterState,
    values: np.ndarray[Any, Any],
    gpu_vars: dict[tuple[str, int], list[tuple[int, Instance]]],
    node_vars: dict[str, list[tuple[_Class, int]]],
) -> Plan:
    """The solution as a ``Plan``: layouts from the instance variables, pods of each class handed
    the free instances of their resource on the node's GPUs."""
    pods: dict[_Class, list[str]] = {}
    for pod in sorted(state.candidates, key=lambda p: p.key):
        if pod.mig_devices and not pod.mig_problem:
            requests = tuple(sorted((r, n) for r, n in pod.requests.items() if n > 0 and not is_mig_resource(r)))
            pods.setdefault((pod.mig_devices, requests, pod.scheduling_class, pod.priority), []).append(pod.key)
    nodes: dict[str, NodePlan] = {}
    placed: list[Placed] = []
    for name, ns in state.nodes.items():
        if ns.frozen or ns.model is None:
            gpus = [GpuPlan(g.index, g.model.name, g.instances, g.instances, g.frozen) for g in ns.gpus]
            nodes[name] = NodePlan(name, gpus, dict(ns.current_spec_annotations), False, ns.frozen or "unknown")
            continue
        model = ns.model
        gpu_plans = []
        slots: dict[str, list[tuple[int, str]]] = {}
        for gs in ns.gpus:
            kept = [inst for var, inst in gpu_vars.get((name, gs.index), []) if values[var] > 0.5]
            planned = tuple(sorted((*gs.used, *kept)))
            gpu_plans.append(GpuPlan(gs.index, model.name, gs.instances, planned, gs.frozen))
            for inst in kept:
                slots.setdefault(model.profile(inst.profile).resource, []).append((gs.index, inst.profile))
        for cls, y in node_vars.get(name, []):
            for _ in range(round(values[y])):
                devices = [Device(*slots[r].pop(), False) for r in cls[0]]
                first = devices[0]
                placed.append(Placed(pods[cls].pop(), name, first.gpu, first.profile, False, tuple(devices[1:])))
        annotations = encode_spec({g.index: [i.freed() for i in g.planned] for g in gpu_plans}, "exact")
        nodes[name] = NodePlan(name, gpu_plans, annotations, True)
    done = {p.pod for p in placed}
    unplaced = [Unplaced(p.key, "not placed by the optimum") for p in state.candidates if p.key not in done]
    return Plan("exact", nodes, placed, unplaced)
