"""The partitioner as the runtime manager runs it: watch caches in, ``Partitioner.cycle()``, metrics out.

Every replica keeps caches of all Nodes and all Pods (``Manager.watch``) and campaigns for the Lease;
only the leader plans (``nos.runtime.manager``). A cycle runs when a cached object changed (the
manager's debounce turns a burst of pod updates into one cycle), when the cycle asks for it
(``CycleResult.requeue_after``: the open batch closes, the wait for agents' reports times out), and
at least every ``resync_seconds``. Cycles read the caches, not the API; writes still go to the API
with conflict retries.

Staying live: building the cluster state, planning and checking run on a worker thread
(``asyncio.to_thread``), so a long plan never stops the loop that renews the Lease and answers the
probes. Fencing: right before every node patch (and Event) the partitioner asks
``Manager.may_write()``; a replica whose Lease may have passed writes nothing more (``FencedOut``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from nos.config import PartitionerConfig
from nos.kube.port import Obj
from nos.mig.packing import Geometry
from nos.partitioner.controller import CycleResult, Partitioner
from nos.runtime.manager import Manager

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 5.0
"""A cycle that raised (a bug, an API outage) is retried this soon, not only at the resync."""


class PartitionerRunner:
    def __init__(
        self,
        manager: Manager,
        config: PartitionerConfig,
        geometries: Mapping[str, Sequence[Geometry]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        resync_seconds: float = 60.0,
    ) -> None:
        self.manager, self.config = manager, config
        self.resync_seconds = resync_seconds
        self.nodes = manager.watch("nodes")
        self.pods = manager.watch("pods")
        self.partitioner = Partitioner(
            manager.kube,
            clock,
            config,
            geometries=geometries,
            source=self._snapshot,
            offload=asyncio.to_thread,
            fence=manager.may_write,
            recorder=manager.recorder,
        )
        self.cycles = 0

    @property
    def liveness_timeout_seconds(self) -> float:
        return self.config.liveness_timeout_seconds

    async def _snapshot(self) -> tuple[list[Obj], list[Obj]]:
        # The cached dicts are shared, not copied: building the cluster state only reads them.
        return self.nodes.items(), self.pods.items()

    def healthy(self) -> bool:
        return True  # planning runs on a worker thread: the loop's progress says it all

    def close(self) -> None:
        pass

    async def reconcile(self) -> float | None:
        started = time.perf_counter()
        try:
            result = await self.partitioner.cycle()
        except Exception:  # a bug or an API outage must not end leadership; retry soon
            log.exception("partitioner cycle failed")
            return RETRY_AFTER_FAILURE_S
        self.cycles += 1
        self._record(result, time.perf_counter() - started)
        return result.requeue_after

    def _record(self, result: CycleResult, duration_s: float) -> None:
        m = self.manager.metrics
        m.candidate_pods.set(result.candidates)
        if result.fenced:
            m.fenced.inc()
        m.frozen.labels("node").set(self.partitioner.frozen[0])
        m.frozen.labels("gpu").set(self.partitioner.frozen[1])
        if result.plan is not None:
            m.plans.labels("written" if result.written else "unchanged").inc()
            m.plan_duration.observe(duration_s)
            m.pods_placed.observe(len(result.plan.placed))
            m.nodes_changed.inc(len(result.written))
            m.node_write_failures.inc(len(result.failed))
