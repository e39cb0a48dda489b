"""A list-watch cache (reflector) of one resource kind over the ``Kube`` port.

List once, remember the list's resourceVersion, watch from it with a server-side timeout; when a
stream ends, watch again from the last version seen (no re-list: nothing was missed); on 410 Gone
re-list and diff the new list against the cache, so objects deleted while we were away still
produce a (synthetic) DELETED. Selector transitions need no code here: the server sends an object
entering the selector as ADDED and one leaving it as DELETED.

The cache is what controllers read instead of listing; the ``on_change`` callback tells them
something moved (the runtime manager wakes the loop with it). Why not lightkube's watch alone: it has
no cache, no re-list on 410 and no diff (docs/kubernetes.md, "Client choice").
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from nos.kube.port import Gone, Kube, KubeError, Obj, Resource

log = logging.getLogger(__name__)

OnChange = Callable[[str, Obj], None]
"""``(type, object)`` for every change the cache applied (ADDED, MODIFIED, DELETED)."""


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def _rv(obj: Obj) -> str | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return str(value) if value is not None else None


class Reflector:
    """Keeps ``cache`` equal to the objects of ``resource`` matching the selectors.

    ``run()`` loops until cancelled. ``synced`` is set after the first successful list (readiness).
    Errors other than 410 are retried with capped exponential backoff, resuming from the last version.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout_s: int = 300,
        on_change: OnChange | None = None,
        on_list: Callable[[], None] | None = None,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.kube, self.resource = kube, resource
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self.watch_timeout_s = watch_timeout_s
        self.on_change = on_change
        self.on_list = on_list
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.cache: dict[str, Obj] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.lists = 0
        """How many lists were made (1 + one per 410): for tests and metrics."""
        self.watches = 0

    # -- reads -------------------------------------------------------------------------------------
    def items(self) -> list[Obj]:
        """The cached objects (shared, do not mutate), in key order."""
        return [self.cache[k] for k in sorted(self.cache)]

    # -- loop --------------------------------------------------------------------------------------
    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                started = asyncio.get_running_loop().time()
                seen = await self._watch_once()
                failures = 0
                if not seen and asyncio.get_running_loop().time() - started < 1.0:
                    await asyncio.sleep(self.backoff_base_s)  # a server ending streams at once: do not spin
            except Gone:
                log.info("%s: resourceVersion %s expired, re-listing", self.resource, self.resource_version)
                self.resource_version = None
            except KubeError as e:
                failures += 1
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
                log.warning("%s: list/watch failed (%s); retrying in %.1fs", self.resource, e, delay)
                await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _relist(self) -> None:
        items, rv = await self.kube.list_with_version(
            self.resource, self.namespace, self.label_selector, self.field_selector
        )
        self.lists += 1
        if self.on_list is not None:
            self.on_list()
        fresh = {object_key(o): o for o in items}
        for key in sorted(set(self.cache) - set(fresh)):  # deleted while we were not watching
            self._apply("DELETED", self.cache[key])
        for key, obj in sorted(fresh.items()):
            old = self.cache.get(key)
            if old is None:
                self._apply("ADDED", obj)
            elif _rv(old) != _rv(obj):
                self._apply("MODIFIED", obj)
        self.resource_version = rv
        self.synced.set()

    async def _watch_once(self) -> int:
        """One watch stream; returns how many events it carried."""
        self.watches += 1
        seen = 0
        stream = self.kube.watch(
            self.resource,
            self.namespace,
            self.label_selector,
            self.field_selector,
            resource_version=self.resource_version,
            timeout_s=self.watch_timeout_s,
        )
        try:
            async for kind, obj in stream:
                seen += 1
                if kind == "ERROR":  # an adapter that passes errors through: treat as the status says
                    code = int(obj.get("code") or 0)
                    if code == 410:
                        raise Gone(str(obj.get("message")))
                    raise KubeError(str(obj.get("message")), code)
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
                self.resource_version = _rv(obj) or self.resource_version
        finally:
            aclose: Any = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return seen

    def _apply(self, kind: str, obj: Obj) -> None:
        key = object_key(obj)
        if kind == "DELETED":
            if self.cache.pop(key, None) is None:
                return
        elif kind in ("ADDED", "MODIFIED"):
            if key not in self.cache:
                kind = "ADDED"
            self.cache[key] = obj
        else:
            log.debug("%s: ignoring watch event %s", self.resource, kind)
            return
        if self.on_change is not None:
            try:
                self.on_change(kind, obj)
            except Exception:  # a listener bug must not stop the cache
                log.exception("%s: change listener failed", self.resource)


async def wait_synced(reflectors: Sequence[Reflector], stop: asyncio.Event) -> bool:
    """Wait for every cache's first list; False if ``stop`` came first."""
    synced: asyncio.Future[Any] = asyncio.gather(*(r.synced.wait() for r in reflectors))
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for f in (synced, stopped):
        f.cancel()
    return all(r.synced.is_set() for r in reflectors)
