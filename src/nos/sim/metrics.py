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
    mean_wait_s: float = 0.0
    """Mean time the pods pending at ``t`` have waited so far."""
    max_wait_s: float = 0.0


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

    def sample(self, t: float, pending: list[SimPod], running: int) -> None:
        waits = [t - p.spec.arrival_s for p in pending]
        self.samples.append(
            Sample(
                t,
                self.running_compute / self.total_compute,
                len(pending),
                running,
                sum(waits) / len(waits) if waits else 0.0,
                max(waits, default=0.0),
            )
        )

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
    p50_pending_s: float
    p95_pending_s: float
    max_pending_s: float
    mean_device_wait_s: float
    """Arrival -> the pod's device advertised (0 when it was before the arrival), over bound pods."""
    p95_device_wait_s: float
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
    by_profile: dict[str, dict[str, float]] = field(default_factory=dict)
    """Profile -> pods, meanPendingSeconds, neverScheduled of its pods."""
    layouts: dict[str, int] = field(default_factory=dict)
    """Static policies: layout (profile counts, ``1g.10gb=2,...``) -> number of GPUs with it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "completed": self.completed,
            "neverScheduled": self.never_scheduled,
            "meanPendingSeconds": round(self.mean_pending_s, 3),
            "p50PendingSeconds": round(self.p50_pending_s, 3),
            "p95PendingSeconds": round(self.p95_pending_s, 3),
            "maxPendingSeconds": round(self.max_pending_s, 3),
            "meanDeviceWaitSeconds": round(self.mean_device_wait_s, 3),
            "p95DeviceWaitSeconds": round(self.p95_device_wait_s, 3),
            "allocationPercent": round(100 * self.allocation, 3),
            "devicePluginRestarts": self.device_plugin_restarts,
            "nodeReconfigurations": self.node_reconfigurations,
            "plans": self.plans,
            "admissionFailures": self.admission_failures,
            "agentErrors": self.agent_errors,
            "endSeconds": round(self.end_s, 3),
            "makespanSeconds": None if self.makespan_s is None else round(self.makespan_s, 3),
            "layouts": dict(self.layouts),
            "byProfile": {p: dict(v) for p, v in sorted(self.by_profile.items())},
        }


def versus(result: PolicyResult, ideal: PolicyResult) -> dict[str, float | None]:
    """Distance of ``result`` to the ideal: pending-time ratios (>= 1 is worse; None when the
    ideal's is 0) and the allocation ratio (<= 1 is worse)."""

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b > 0 else None

    return {
        "meanPendingRatio": ratio(result.mean_pending_s, ideal.mean_pending_s),
        "p95PendingRatio": ratio(result.p95_pending_s, ideal.p95_pending_s),
        "allocationRatio": ratio(result.allocation, ideal.allocation),
        "neverScheduledDelta": result.never_scheduled - ideal.never_scheduled,
    }


def by_profile(pods: list[SimPod], t_end: float) -> dict[str, dict[str, float]]:
    """Per requested profile: pod count, mean pending time (censored as above), never scheduled."""
    groups: dict[str, list[SimPod]] = {}
    for p in pods:
        groups.setdefault(p.spec.profile, []).append(p)
    out: dict[str, dict[str, float]] = {}
    for profile, members in groups.items():
        waits = pending_times(members, t_end)
        out[profile] = {
            "pods": len(members),
            "meanPendingSeconds": round(sum(waits) / len(waits), 3) if waits else 0.0,
            "neverScheduled": sum(1 for p in members if p.bound_at is None),
        }
    return out


def device_waits(pods: list[SimPod]) -> list[float]:
    """Arrival to the bound pod's device being advertised (0 if it already was)."""
    return [
        max(0.0, p.device_at - p.spec.arrival_s) for p in pods if p.bound_at is not None and p.device_at is not None
    ]


def pending_times(pods: list[SimPod], t_end: float) -> list[float]:
    """Arrival to bind; a pod still pending at the end counts until the end (censored)."""
    out = []
    for p in pods:
        if p.spec.arrival_s > t_end:
            continue
        start = p.bound_at if p.bound_at is not None else t_end
        out.append(start - p.spec.arrival_s)
    return out
