"""What a run measures (definitions in docs/simulate.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nos.sim.workload import SimPod


@dataclass
class Sample:
    t: float
    allocation: float
    """Share of the cluster's compute slices allocated to running pods at ``t`` (0-1)."""
    pending: int
    running: int


@dataclass
class Metrics:
    total_compute: int
    window_end: float = math.inf
    """Allocation is averaged over [0, window_end] (the arrival window)."""
    running_compute: int = 0
    _last_t: float = 0.0
    _area: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    def _advance(self, t: float) -> None:
        end = min(t, self.window_end)
        if end > self._last_t:
            self._area += self.running_compute * (end - self._last_t)
            self._last_t = end

    def started(self, t: float, pod: SimPod) -> None:
        self._advance(t)
        self.running_compute += pod.compute

    def finished(self, t: float, pod: SimPod) -> None:
        self._advance(t)
        self.running_compute -= pod.compute

    def sample(self, t: float, pending: int, running: int) -> None:
        self.samples.append(Sample(t, self.running_compute / self.total_compute, pending, running))

    def allocation(self, t_end: float) -> float:
        """Time-weighted mean share of compute slices allocated over [0, min(t_end, window_end)]."""
        self._advance(t_end)
        span = min(t_end, self.window_end)
        return self._area / (self.total_compute * span) if span > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class PolicyResult:
    policy: str
    pods: int
    completed: int
    never_scheduled: int
    mean_pending_s: float
    p95_pending_s: float
    allocation: float
    device_plugin_restarts: int
    node_reconfigurations: int
    plans: int
    admission_failures: int
    agent_errors: int
    end_s: float
    makespan_s: float | None
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "completed": self.completed,
            "neverScheduled": self.never_scheduled,
            "meanPendingSeconds": round(self.mean_pending_s, 3),
            "p95PendingSeconds": round(self.p95_pending_s, 3),
            "allocationPercent": round(100 * self.allocation, 3),
            "devicePluginRestarts": self.device_plugin_restarts,
            "nodeReconfigurations": self.node_reconfigurations,
            "plans": self.plans,
            "admissionFailures": self.admission_failures,
            "agentErrors": self.agent_errors,
            "endSeconds": round(self.end_s, 3),
            "makespanSeconds": None if self.makespan_s is None else round(self.makespan_s, 3),
        }


def pending_times(pods: list[SimPod], t_end: float) -> list[float]:
    """Arrival to bind; a pod still pending at the end counts until the end (censored)."""
    out = []
    for p in pods:
        if p.spec.arrival_s > t_end:
            continue
        start = p.bound_at if p.bound_at is not None else t_end
        out.append(start - p.spec.arrival_s)
    return out
