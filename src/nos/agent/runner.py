"""The MIG agent as the runtime manager runs it: a watch cache of the own Node drives
``MigAgent.reconcile_once()``, and its results become metrics.

The agent watches only its Node (field selector ``metadata.name=<node>``), so it reacts within a
moment when the partitioner writes a new spec instead of at the next period, and it costs the
apiserver one watch per node. A change of the spec annotations or of the opt-in label wakes a
reconcile (debounced by the manager); its own status patches do not. Every
``report_interval_seconds`` it reconciles anyway (re-reports, catches changes made behind its back).

Offline (``nos agent --spec FILE`` or a simulated node without a cluster) there is no cache: the
manager runs the same loop on the in-memory API, each reconcile followed by ``after`` (the CLI prints
the status and saves the simulated node).

Shutdown: the manager stops the loop between reconciles; a running reconcile is never cancelled,
because its NVML operations run on a worker thread that cancellation could not stop anyway and a
finished apply leaves a consistent report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from nos.agent.agent import MigAgent, ReconcileResult
from nos.contract.annotations import is_mig_partitioned, is_spec_key
from nos.kube.port import Obj
from nos.runtime.manager import Manager

log = logging.getLogger(__name__)

Fingerprint = tuple[bool, tuple[tuple[str, str], ...]]


def spec_fingerprint(node: Obj) -> Fingerprint:
    """What the agent acts on: the opt-in label and the spec annotations (not its own status)."""
    meta = node.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = tuple(sorted((k, str(v)) for k, v in annotations.items() if is_spec_key(k)))
    return is_mig_partitioned(meta.get("labels") or {}), spec


class AgentRunner:
    def __init__(
        self,
        manager: Manager,
        agent: MigAgent,
        *,
        watch: bool = True,
        after: Callable[[ReconcileResult], None] | None = None,
    ) -> None:
        """``watch`` False: no cache of the Node (offline); every period reconciles. ``after`` is called
        with each reconcile's result; a reconcile that raises propagates only without ``watch``."""
        self.manager, self.agent, self.after = manager, agent, after
        self.watching = watch
        if watch:
            self.node = manager.watch(
                "nodes", field_selector=f"metadata.name={agent.node_name}", relevant=self._changed
            )
        self._seen: Fingerprint | None = None
        self.reconciles = 0
        self.last: ReconcileResult | None = None

    @property
    def resync_seconds(self) -> float:
        return self.agent.config.report_interval_seconds

    @property
    def liveness_timeout_seconds(self) -> float:
        return self.agent.config.liveness_timeout_seconds

    def _changed(self, kind: str, node: Obj) -> bool:
        current = spec_fingerprint(node) if kind != "DELETED" else None
        if current == self._seen:
            return False
        self._seen = current
        return True

    def healthy(self) -> bool:
        """No NVML call stuck past its deadline (a wedged agent is restarted instead of reporting 200)."""
        return self.agent.nvml_hung is None

    def close(self) -> None:
        self.agent.close()

    async def reconcile(self) -> float | None:
        if self.watching and self._seen is None:  # a deleted Node: wait for it to come back
            return None
        started = time.perf_counter()
        try:
            result = await self.agent.reconcile_once()
        except Exception:  # in the cluster: logged and counted; the next wake-up or period retries
            if not self.watching:
                raise
            self.manager.metrics.reconcile_errors.inc()
            log.exception("reconcile of node %s failed", self.agent.node_name)
            return None
        self.reconciles += 1
        self.last = result
        self.record(result, time.perf_counter() - started)
        if self.after is not None:
            self.after(result)
        return None

    def record(self, result: ReconcileResult, duration_s: float) -> None:
        m = self.manager.metrics
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
