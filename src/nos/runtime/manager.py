"""The runtime manager: what a nos process owns around its one control loop.

In the spirit of controller-runtime's manager: a process builds one ``Manager`` for its client,
registers the caches its controller reads (``watch``), and ``run``s the controller. The manager owns

* the list-watch caches (``nos.runtime.reflector``): started first, the loop starts once they synced,
  and every change they apply wakes the loop (a controller may filter which ones do);
* leader election (``nos.runtime.leader``), when configured: the loop runs only while leading, and
  ``may_write`` is the fence a controller asks right before each write;
* the metrics/health server (``nos.obs.health``): ``/readyz`` is caches synced (and campaigning),
  ``/healthz`` is no reconcile running past the controller's liveness timeout and the controller's own
  health;
* SIGTERM/SIGINT, which stop the loop between reconciles (with election: the leader's work gets
  ``shutdown_grace_seconds``, then the Lease is released);
* the client: closed when ``run`` ends, as is the controller;
* the one ``EventRecorder`` of the process (fenced with election).

``run`` returns the process' exit code: 0 after a clean stop, 1 when leadership was lost (a fresh
process campaigns again with fresh caches).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from nos.config import LeaderElectionConfig, ServerConfig
from nos.kube.port import Kube, Obj, Resource
from nos.obs.health import ObservabilityServer
from nos.obs.lifecycle import stop_on_signals
from nos.obs.metrics import Metrics
from nos.runtime.events import EventRecorder
from nos.runtime.leader import LeaderElector, LeadershipLost
from nos.runtime.loop import DEBOUNCE_SECONDS, Progress, WakeTrigger, run_loop
from nos.runtime.reflector import Reflector, wait_synced

log = logging.getLogger(__name__)

Relevant = Callable[[str, Obj], bool]
"""``(type, object) -> bool``: whether a cache change should wake the loop."""


class Controller(Protocol):
    """What the manager runs: one reconcile at a time, plus what it needs to know around it."""

    @property
    def resync_seconds(self) -> float:
        """Reconcile at least this often, changes or not."""
        ...

    @property
    def liveness_timeout_seconds(self) -> float:
        """``/healthz`` fails while one reconcile runs longer than this."""
        ...

    async def reconcile(self) -> float | None:
        """One reconcile; returns ``requeue_after`` (see ``nos.runtime.loop``)."""
        ...

    def healthy(self) -> bool:
        """Liveness beyond the loop's progress (e.g. no NVML call stuck)."""
        ...

    def close(self) -> None:
        """Release what the controller holds (threads, handles); called once ``run`` ends."""
        ...


class Manager:
    def __init__(
        self,
        kube: Kube,
        *,
        server: ServerConfig | None = None,
        election: LeaderElectionConfig | None = None,
        identity: str = "",
        metrics: Metrics | None = None,
        debounce_seconds: float = DEBOUNCE_SECONDS,
        watch_timeout_seconds: int = 300,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        """``server`` None: no HTTP server (offline runs); ``election`` None or disabled: no Lease."""
        self.kube = kube
        self.server_config = server
        self.metrics = metrics or Metrics()
        self.debounce_seconds = debounce_seconds
        self.watch_timeout_seconds = watch_timeout_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.trigger = WakeTrigger()
        self.progress = Progress()
        self.elector = LeaderElector(kube, identity, election) if election is not None and election.enabled else None
        self.recorder = EventRecorder(kube, fence=self.may_write if self.elector is not None else None)
        self.reflectors: list[Reflector] = []
        self.server: ObservabilityServer | None = None
        self._controller: Controller | None = None

    # -- what controllers use -------------------------------------------------------------------------
    def watch(
        self,
        resource: Resource,
        *,
        field_selector: str | None = None,
        relevant: Relevant | None = None,
    ) -> Reflector:
        """A cache of ``resource`` started by ``run``; its changes wake the loop (those ``relevant``)."""
        reflector = Reflector(
            self.kube,
            resource,
            field_selector=field_selector,
            watch_timeout_s=self.watch_timeout_seconds,
            on_change=self._on_change(resource, relevant),
            on_list=self.metrics.cache_relists.labels(resource).inc,
        )
        self.reflectors.append(reflector)
        return reflector

    def _on_change(self, resource: str, relevant: Relevant | None) -> Callable[[str, Obj], None]:
        def note(kind: str, obj: Obj) -> None:
            self.metrics.cache_events.labels(resource, kind).inc()
            if relevant is None or relevant(kind, obj):
                self.trigger.set()

        return note

    def may_write(self) -> bool:
        """The fence: True unless leader election is on and the Lease may have passed (see ``leader``)."""
        return self.elector is None or self.elector.holds_lease()

    # -- probes ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Caches synced and (with election) the elector campaigning or leading."""
        synced = all(r.synced.is_set() for r in self.reflectors)
        return synced and (self.elector is None or self.elector.running)

    def live(self) -> bool:
        """No reconcile running past the controller's liveness timeout, and the controller healthy.
        Waiting is progress; a standby is live."""
        controller = self._controller
        if controller is None:
            return True
        return not self.progress.stalled(controller.liveness_timeout_seconds) and controller.healthy()

    # -- the process ----------------------------------------------------------------------------------
    async def run(self, controller: Controller, stop: asyncio.Event | None = None, once: bool = False) -> int:
        """Serve, sync the caches, (campaign and) run the loop until SIGTERM/SIGINT or ``stop`` (after one
        reconcile with ``once``); then close the controller and the client. Returns the exit code."""
        if stop is not None:
            self.trigger.stop = stop
        stop = self.trigger.stop
        self._controller = controller
        code = 0
        with stop_on_signals(stop):
            try:
                if self.server_config is not None:
                    cfg = self.server_config
                    self.server = ObservabilityServer(
                        self.metrics, self.ready, cfg.metrics_port, cfg.health_port, live=self.live
                    )
                    await self.server.start()
                await self._run(controller, stop, once)
            except LeadershipLost as e:
                log.error("%s; exiting so that a fresh process campaigns again", e)
                code = 1
            finally:
                if self.server is not None:
                    await self.server.stop()
                controller.close()
                await self.kube.close()
        return code

    async def _run(self, controller: Controller, stop: asyncio.Event, once: bool) -> None:
        caches = [asyncio.create_task(r.run(), name=f"reflector-{r.resource}") for r in self.reflectors]
        try:
            if not await wait_synced(self.reflectors, stop):
                return
            if self.reflectors:
                log.info("caches synced: %s", ", ".join(f"{len(r.cache)} {r.resource}" for r in self.reflectors))
            if self.elector is None:
                await self._loop(controller, once)
            else:
                await self.elector.run(lambda: self._lead(controller, once), stop, grace_s=self.shutdown_grace_seconds)
        finally:
            for task in caches:
                task.cancel()
            await asyncio.gather(*caches, return_exceptions=True)

    async def _lead(self, controller: Controller, once: bool) -> None:
        self.metrics.is_leader.set(1)
        try:
            await self._loop(controller, once)
        finally:
            self.metrics.is_leader.set(0)

    async def _loop(self, controller: Controller, once: bool) -> None:
        await run_loop(
            controller.reconcile,
            self.trigger,
            resync_seconds=controller.resync_seconds,
            debounce_seconds=self.debounce_seconds,
            once=once,
            progress=self.progress,
        )
