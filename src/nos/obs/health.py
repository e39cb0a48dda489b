"""HTTP endpoints of a process: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (ready).

aiohttp on the process' own event loop (no thread): ``/readyz`` calls ``ready()`` in the loop that
owns the caches, so the answer is always consistent. ``/healthz`` answers as long as the loop runs —
a wedged loop stops answering and the liveness probe restarts the pod — and, with ``live``, only
while the process makes progress (a reconcile or plan stuck past its deadline answers 503). With equal ports one server
serves all three paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from nos.obs.metrics import Metrics

log = logging.getLogger(__name__)

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class ObservabilityServer:
    def __init__(
        self,
        metrics: Metrics,
        ready: Callable[[], bool],
        metrics_port: int = 8080,
        health_port: int = 8081,
        host: str = "0.0.0.0",
        live: Callable[[], bool] | None = None,
    ) -> None:
        self.metrics, self.ready, self.live = metrics, ready, live
        self.metrics_port, self.health_port, self.host = metrics_port, health_port, host
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}
        """Bound ports by role ("metrics", "health"); useful with port 0."""

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        if self.live is None or self.live():
            return web.Response(text="ok\n")
        return web.Response(text="stalled\n", status=503)

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ok\n")
        return web.Response(text="not ready\n", status=503)

    async def start(self) -> None:
        same = self.metrics_port == self.health_port and self.metrics_port != 0
        plans = [("metrics+health" if same else "metrics", self.metrics_port)]
        if not same:
            plans.append(("health", self.health_port))
        for role, port in plans:
            app = web.Application()
            if "metrics" in role:
                app.router.add_get("/metrics", self._metrics)
            if "health" in role or same:
                app.router.add_get("/healthz", self._healthz)
                app.router.add_get("/readyz", self._readyz)
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, self.host, port)
            await site.start()
            self._runners.append(runner)
            bound = runner.addresses[0][1]
            for r in role.split("+"):
                self.ports[r] = bound
            log.info("serving %s on port %d", role, bound)

    async def stop(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()
