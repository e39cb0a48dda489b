"""``nos agent`` in the cluster: a watch cache of the own Node drives ``MigAgent.reconcile_once()``.

The agent watches only its Node (field selector ``metadata.name=<node>``), so it reacts within a
moment when the partitioner writes a new spec instead of at the next period, and it costs the
apiserver one watch per node. A change of the spec annotations or of the opt-in label wakes a
reconcile (debounced by ``min_interval_s``); its own status patches do not. Every
``report_interval_seconds`` it reconciles anyway (re-reports, catches changes made behind its back).

Shutdown: ``stop`` is checked between reconciles; a running reconcile is never cancelled, because
its NVML operations run on a worker thread that cancellation could not stop anyway and a finished
apply leaves a consistent report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nos.agent.agent import MigAgent, ReconcileResult
from nos.contract.annotations import is_mig_partitioned, is_spec_key
from nos.kube.port import Obj
from nos.kube.reflector import Reflector, wait_synced
from nos.obs.metrics import Metrics

log = logging.getLogger(__name__)


def spec_fingerprint(node: Obj) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """What the agent acts on: the opt-in label and the spec annotations (not its own status)."""
    meta = node.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = tuple(sorted((k, str(v)) for k, v in annotations.items() if is_spec_key(k)))
    return is_mig_partitioned(meta.get("labels") or {}), spec


class AgentRunner:
    def __init__(
        self,
        agent: MigAgent,
        *,
        metrics: Metrics | None = None,
        watch_timeout_s: int = 300,
        min_interval_s: float = 1.0,
    ) -> None:
        self.agent = agent
        self.metrics = metrics or Metrics()
        self.min_interval_s = min_interval_s
        self.wake = asyncio.Event()
        self.node = Reflector(
            agent.kube,
            "nodes",
            field_selector=f"metadata.name={agent.node_name}",
            watch_timeout_s=watch_timeout_s,
            on_change=self._changed,
        )
        self._seen: tuple[bool, tuple[tuple[str, str], ...]] | None = None
        self.reconciles = 0
        self._reconcile_started: float | None = None
        self.clock = time.monotonic

    def _changed(self, kind: str, node: Obj) -> None:
        self.metrics.cache_events.labels("nodes", kind).inc()
        current = spec_fingerprint(node) if kind != "DELETED" else None
        if current != self._seen:
            self._seen = current
            self.wake.set()

    def ready(self) -> bool:
        return self.node.synced.is_set()

    def live(self) -> bool:
        """Progress, for ``/healthz``: no NVML call stuck past its deadline and no reconcile running
        longer than ``liveness_timeout_seconds`` (a wedged agent is restarted instead of reporting 200)."""
        if self.agent.nvml_hung is not None:
            return False
        started = self._reconcile_started
        return started is None or self.clock() - started < self.agent.config.liveness_timeout_seconds

    async def run(self, stop: asyncio.Event) -> None:
        cache = asyncio.create_task(self.node.run(), name="reflector-node")
        try:
            if not await wait_synced([self.node], stop):
                return
            interval = self.agent.config.report_interval_seconds
            while not stop.is_set():
                self.wake.clear()
                if self._seen is not None:  # the Node exists (a deleted Node: wait for it to come back)
                    await self.reconcile()
                waiters = {asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())}
                done, _ = await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if done and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.min_interval_s)
        finally:
            cache.cancel()
            await asyncio.gather(cache, return_exceptions=True)

    async def reconcile(self) -> ReconcileResult | None:
        started = time.perf_counter()
        self._reconcile_started = self.clock()
        try:
            result = await self.agent.reconcile_once()
        except Exception:  # logged and counted; the next wake-up or period retries
            self.metrics.reconcile_errors.inc()
            log.exception("reconcile of node %s failed", self.agent.node_name)
            return None
        finally:
            self._reconcile_started = None
        self.reconciles += 1
        self.record(result, time.perf_counter() - started)
        return result

    def record(self, result: ReconcileResult, duration_s: float) -> None:
        m = self.metrics
        if result.applied is not None:
            failures = len(result.applied.failures)
            m.applies.labels("failed" if failures else "success").inc()
            m.apply_duration.observe(duration_s)
            m.nvml_errors.inc(failures)
        if result.device_plugin_restarted is not None:
            outcome = "ok" if result.device_plugin_restarted else "failed"
            if result.device_plugin_restarted and result.allocatable_ready is False:
                outcome = "allocatable_timeout"
            m.device_plugin_restarts.labels(outcome).inc()
