"""Cluster size for a named load: how much of the cluster's compute the workload asks for.

Offered load of pods on ``C`` compute slices over the run's horizon ``[0, H]``::

    sum over pods of compute(profile) * min(run time, H - arrival)  /  (C * H)

i.e. the share of the cluster's compute-time within the simulated horizon that the pods would use
if each started on arrival (work past the horizon cannot count). Above 1 the cluster cannot keep
up whatever the policy; well below 1 queues form only in bursts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nos.mig.catalog import GpuModel
from nos.sim.scenario import PodSpec

LOADS = {"light": 0.5, "busy": 0.8, "overloaded": 1.2}


def parse_load(text: str) -> float:
    """A named load or a positive number."""
    if text in LOADS:
        return LOADS[text]
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"load {text!r} is not one of {', '.join(LOADS)} or a positive number")
    return value


def compute_demand(pods: Sequence[PodSpec], model: GpuModel, horizon_s: float) -> float:
    """Compute-slice seconds the pods ask for within [0, horizon_s]."""
    return sum(model.profile(p.profile).compute * max(0.0, min(p.duration_s, horizon_s - p.arrival_s)) for p in pods)


def offered_load(pods: Sequence[PodSpec], model: GpuModel, gpus: int, horizon_s: float) -> float:
    return compute_demand(pods, model, horizon_s) / (gpus * model.compute_slices * horizon_s)


def nodes_for_load(pods: Sequence[PodSpec], model: GpuModel, gpus_per_node: int, horizon_s: float, load: float) -> int:
    """The node count whose offered load is closest to ``load`` (at least one node)."""
    per_node = gpus_per_node * model.compute_slices * horizon_s
    exact = compute_demand(pods, model, horizon_s) / (per_node * load)
    candidates = {max(1, math.floor(exact)), max(1, math.ceil(exact))}
    return min(candidates, key=lambda n: (abs(compute_demand(pods, model, horizon_s) / (per_node * n) - load), n))
