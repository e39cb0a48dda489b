"""``nos partitioner`` in the cluster: watch caches + Lease election + ``Partitioner.cycle()``.

Every replica keeps caches of all Nodes and all Pods (reflectors) and campaigns for the Lease; only the
leader plans. While leading, a cycle runs when a cached object changed (debounced by
``min_interval_s``, so a burst of pod updates costs one cycle), when the open batch is due to close
(``Batcher.next_deadline()``), when the wait for agents' reports times out, and at least every
``resync_s``. Cycles read the caches, not the API; writes still go to the API with conflict retries.

Shutdown: ``stop`` lets the running cycle finish (up to ``shutdown_grace_s``: its node patches are
independent, so cancelling later is also safe — the next leader re-plans from what was written),
then the Lease is released. Losing the Lease cancels the cycle at once and raises ``LeadershipLost``.

Staying live: building the cluster state, planning and checking run on a worker thread
(``asyncio.to_thread``), so a long plan never stops the loop that renews the Lease and answers the
probes; ``live()`` fails when one cycle runs longer than ``liveness_timeout_seconds``. Fencing: right before every
node patch (and Event) the partitioner asks ``LeaderElector.holds_lease()``; a replica whose Lease
may have passed writes nothing more (``FencedOut``), even if its renew loop has not noticed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from nos.config import PartitionerConfig
from nos.kube.leader import LeaderElector
from nos.kube.port import Kube, Obj
from nos.kube.reflector import Reflector, wait_synced
from nos.mig.packing import Geometry
from nos.obs.metrics import Metrics
from nos.partitioner.controller import CycleResult, Partitioner

log = logging.getLogger(__name__)


class PartitionerRunner:
    def __init__(
        self,
        kube: Kube,
        config: PartitionerConfig,
        identity: str,
        *,
        metrics: Metrics | None = None,
        geometries: Mapping[str, Sequence[Geometry]] | None = None,
        clock: Callable[[], float] = time.time,
        watch_timeout_s: int = 300,
        min_interval_s: float = 1.0,
        resync_s: float = 60.0,
        shutdown_grace_s: float = 10.0,
    ) -> None:
        self.kube, self.config, self.identity = kube, config, identity
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.min_interval_s, self.resync_s, self.shutdown_grace_s = min_interval_s, resync_s, shutdown_grace_s
        self.wake = asyncio.Event()
        self.nodes = Reflector(kube, "nodes", watch_timeout_s=watch_timeout_s, on_change=self._changed("nodes"))
        self.pods = Reflector(kube, "pods", watch_timeout_s=watch_timeout_s, on_change=self._changed("pods"))
        election = config.leader_election
        self.elector = LeaderElector(kube, identity, election) if election.enabled else None
        self.partitioner = Partitioner(
            kube,
            clock,
            config,
            geometries=geometries,
            source=self._snapshot,
            offload=asyncio.to_thread,
            fence=self.elector.holds_lease if self.elector is not None else None,
        )
        self.cycles = 0
        self._progress_at: float | None = None

    def _changed(self, resource: str) -> Callable[[str, Obj], None]:
        def note(kind: str, _: Obj) -> None:
            self.metrics.cache_events.labels(resource, kind).inc()
            self.wake.set()

        return note

    async def _snapshot(self) -> tuple[list[Obj], list[Obj]]:
        # The cached dicts are shared, not copied: building the cluster state only reads them.
        return self.nodes.items(), self.pods.items()

    def synced(self) -> bool:
        return self.nodes.synced.is_set() and self.pods.synced.is_set()

    def live(self) -> bool:
        """For ``/healthz``: a leader whose loop has not come round (a cycle ended) within
        ``liveness_timeout_seconds`` is stuck; a standby is live. Planning runs on a worker thread, so the probe
        itself is answered during a long plan."""
        progress = self._progress_at
        return progress is None or time.monotonic() - progress < self.config.liveness_timeout_seconds

    def ready(self) -> bool:
        """Caches synced and (with election) the elector campaigning or leading."""
        return self.synced() and (self.elector is None or self.elector.running)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; raises ``LeadershipLost`` if the Lease could not be renewed."""
        caches = [asyncio.create_task(r.run(), name=f"reflector-{r.resource}") for r in (self.nodes, self.pods)]
        try:
            if not await wait_synced([self.nodes, self.pods], stop):
                return
            log.info("caches synced: %d node(s), %d pod(s)", len(self.nodes.cache), len(self.pods.cache))
            if self.elector is None:
                await self.lead(stop)
            else:
                await self.elector.run(lambda: self.lead(stop), stop, grace_s=self.shutdown_grace_s)
        finally:
            for task in caches:
                task.cancel()
            await asyncio.gather(*caches, return_exceptions=True)

    async def lead(self, stop: asyncio.Event) -> None:
        """Plan while leading, until ``stop`` (checked between cycles)."""
        self.metrics.is_leader.set(1)
        try:
            while not stop.is_set():
                self.wake.clear()
                self._progress_at = time.monotonic()
                result = await self._cycle()
                self._progress_at = None  # waiting is progress: only a cycle can be stuck
                woken = await _wait_any(self.wake, stop, self._next_wait(result))
                if woken and not stop.is_set():  # debounce a burst of changes into one cycle
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.min_interval_s)
        finally:
            self._progress_at = None
            self.metrics.is_leader.set(0)

    async def _cycle(self) -> CycleResult | None:
        started = time.perf_counter()
        try:
            result = await self.partitioner.cycle()
        except Exception:  # a bug or an API outage must not end leadership; retry on the next wake-up
            log.exception("partitioner cycle failed")
            return None
        self.cycles += 1
        m = self.metrics
        m.candidate_pods.set(len(self.partitioner.batcher.seen))
        if result.fenced:
            m.fenced.inc()
        m.frozen.labels("node").set(self.partitioner.frozen[0])
        m.frozen.labels("gpu").set(self.partitioner.frozen[1])
        if result.plan is not None:
            m.plans.labels("written" if result.written else "unchanged").inc()
            m.plan_duration.observe(time.perf_counter() - started)
            m.pods_placed.observe(len(result.plan.placed))
            m.nodes_changed.inc(len(result.written))
            m.node_write_failures.inc(len(result.failed))
        return result

    def _next_wait(self, result: CycleResult | None) -> float:
        wait = self.resync_s
        if result is None:
            return min(wait, 5.0)
        now, part = self.clock(), self.partitioner
        deadline = part.batcher.next_deadline()
        if deadline is not None and not result.waiting_for:
            wait = min(wait, max(deadline - now, 0.0) + 0.01)
        if result.waiting_for and part.last_plan_at is not None:
            wait = min(wait, max(part.last_plan_at + part.config.report_timeout_seconds - now, 0.0) + 0.01)
        return wait


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> bool:
    """Wait until ``wake`` or ``stop`` is set or ``timeout`` passes; True when woken by an event."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())}
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for w in waiters:
            w.cancel()
