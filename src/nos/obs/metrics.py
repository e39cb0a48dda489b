"""Prometheus metrics of the partitioner and the agent (prometheus-client).

Each process builds one ``Metrics`` on its own ``CollectorRegistry`` (not the global default), so
tests can create as many as they like and ``/metrics`` shows only nos' series plus the process
collector. Names follow Prometheus conventions: ``_total`` counters, ``_seconds`` durations.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector

_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        # partitioner
        self.candidate_pods = Gauge(
            "nos_partitioner_candidate_pods", "Pending pods waiting for a MIG device (current batch).", registry=r
        )
        self.plans = Counter(
            "nos_partitioner_plans_total",
            "Plans computed, by outcome (written, unchanged).",
            ["outcome"],
            registry=r,
        )
        self.plan_duration = Histogram(
            "nos_partitioner_plan_duration_seconds",
            "Duration of a planning cycle (state, plan, check, writes).",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.pods_placed = Histogram(
            "nos_partitioner_pods_placed", "Candidate pods placed per plan.", buckets=_COUNT_BUCKETS, registry=r
        )
        self.nodes_changed = Counter(
            "nos_partitioner_nodes_changed_total", "Nodes whose spec annotations a plan wrote.", registry=r
        )
        self.node_write_failures = Counter(
            "nos_partitioner_node_write_failures_total", "Spec writes that failed after retries.", registry=r
        )
        self.is_leader = Gauge("nos_partitioner_leader", "1 while this replica holds the Lease.", registry=r)
        self.fenced = Counter(
            "nos_partitioner_fenced_total",
            "Cycles whose writes stopped because the Lease was no longer held (fencing).",
            registry=r,
        )
        self.frozen = Gauge(
            "nos_partitioner_frozen",
            "Managed nodes or GPUs left as they are (malformed input, unreadable GPU, failed check).",
            ["kind"],
            registry=r,
        )
        # agent
        self.apply_duration = Histogram(
            "nos_agent_apply_duration_seconds",
            "Duration of one reconcile that changed MIG devices (NVML ops, restart, report).",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.applies = Counter(
            "nos_agent_applies_total",
            "Reconciles with MIG operations, by outcome (success, failed).",
            ["outcome"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "nos_agent_reconcile_errors_total", "Reconciles that raised (API or NVML unavailable...).", registry=r
        )
        self.nvml_errors = Counter(
            "nos_agent_nvml_errors_total", "MIG operations NVML refused (each failed create/destroy).", registry=r
        )
        self.device_plugin_restarts = Counter(
            "nos_agent_device_plugin_restarts_total",
            "Device plugin restarts, by outcome (ok, failed, allocatable_timeout).",
            ["outcome"],
            registry=r,
        )
        # both
        self.cache_events = Counter(
            "nos_cache_events_total", "Changes applied to the watch caches.", ["resource", "type"], registry=r
        )
        self.cache_relists = Counter(
            "nos_cache_relists_total",
            "Lists made by the watch caches (start and after 410).",
            ["resource"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
