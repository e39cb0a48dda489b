"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

* Expiry is judged by the *local* time at which we last saw the Lease record change, never by
  comparing our clock with ``renewTime`` written by another machine (clocks differ).
* Acquire and renew are a read followed by a replace carrying the read resourceVersion, so two
  candidates can never both succeed: the loser gets 409 Conflict.
* The leader renews every ``retry_period_seconds``; if no renewal succeeds within ``renew_deadline_seconds`` (or
  one answers 409, or the Lease names another holder) it stops leading at once: its work is cancelled
  and ``run`` raises ``LeadershipLost`` (the process should exit and restart with fresh caches).
* On graceful shutdown the leader releases the Lease (empty holder), so a standby takes over after
  its next retry instead of waiting for the lease to expire.
* Fencing: ``holds_lease()`` is true only until ``renew_deadline_seconds`` after the *start* of the last
  successful acquire/renew. A standby takes over no earlier than ``lease_duration_seconds`` after it saw
  that renewal, so a leader that checks ``holds_lease()`` right before each write never writes while
  another replica may lead, even when its event loop or its renewals stalled (the margin,
  lease - renew deadline, covers the time between the check and the write reaching the apiserver).

Why own code: lightkube has no elector, and the official aio client's was broken (stack doc §1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from nos.config import LEASE_JITTER as JITTER
from nos.config import LeaderElectionConfig
from nos.kube.port import Conflict, Kube, KubeError, NotFound, Obj

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """Renewal failed; the leader's work was cancelled."""


def _micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """``await elector.run(work, stop)``: campaign, run ``work()`` while leading, release on ``stop``."""

    def __init__(
        self,
        kube: Kube,
        identity: str,
        config: LeaderElectionConfig | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube, self.identity = kube, identity
        self.config = config or LeaderElectionConfig()
        self._wall = wall_clock
        self.is_leader = False
        self.running = False
        self.transitions_seen = 0
        self._observed: dict[str, Any] | None = None  # last Lease spec seen
        self._observed_at = 0.0  # loop time when it last changed
        self._held_since: float | None = None  # loop time when the last successful attempt started

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- one attempt -------------------------------------------------------------------------------
    async def try_acquire_or_renew(self) -> bool:
        """One read + create/replace. True when we hold the Lease afterwards. Raises ``Conflict`` when
        the write lost a race, ``KubeError`` when the API failed."""
        cfg = self.config
        now = _micro_time(self._wall())
        attempt = self._now()
        try:
            lease = await self.kube.get("leases", cfg.lease_name, cfg.namespace)
        except NotFound:
            first = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": round(cfg.lease_duration_seconds),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            }
            body = {"metadata": {"name": cfg.lease_name, "namespace": cfg.namespace}, "spec": first}
            created = await self.kube.create("leases", body)
            self._observe(created.get("spec") or {})
            self._held_since = attempt
            return True
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        if spec != self._observed:
            self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration_seconds)
        if holder and holder != self.identity and self._now() < self._observed_at + duration:
            return False  # someone else holds a lease that has not expired by our own observation
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(cfg.lease_duration_seconds),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (holder != self.identity),
        }
        replaced = await self.kube.replace("leases", _with_spec(lease, new_spec))
        self._observe(replaced.get("spec") or new_spec)
        self._held_since = attempt
        return True

    def holds_lease(self) -> bool:
        """Leading, and the last successful renewal started less than ``renew_deadline_seconds`` ago: safe
        to write now (see the module docstring). Call it from the event loop, right before a write."""
        held = self._held_since
        return self.is_leader and held is not None and self._now() < held + self.config.renew_deadline_seconds

    def _observe(self, spec: dict[str, Any]) -> None:
        self._observed, self._observed_at = spec, self._now()

    # -- the loops ---------------------------------------------------------------------------------
    async def acquire(self, stop: asyncio.Event) -> bool:
        """Retry until we lead (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    log.info(
                        "became leader of lease %s/%s as %s",
                        self.config.namespace,
                        self.config.lease_name,
                        self.identity,
                    )
                    return True
            except KubeError as e:  # Conflict included: someone was faster
                log.debug("acquiring the lease failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.retry_period_seconds * random.uniform(1.0, JITTER))
        return False

    async def _renew_until_lost(self) -> None:
        """Returns when leadership is lost."""
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.retry_period_seconds)
            deadline = self._now() + cfg.renew_deadline_seconds
            while True:
                try:
                    async with asyncio.timeout(max(deadline - self._now(), 0.0)):
                        if await self.try_acquire_or_renew():
                            break
                    log.warning(
                        "lease %s is held by %s now", cfg.lease_name, (self._observed or {}).get("holderIdentity")
                    )
                    return
                except Conflict:
                    log.warning("renewing lease %s: conflict, someone else wrote it", cfg.lease_name)
                    return
                except (KubeError, TimeoutError) as e:
                    log.warning("renewing lease %s failed: %s", cfg.lease_name, e or "timeout")
                if self._now() >= deadline:
                    return
                await asyncio.sleep(min(cfg.retry_period_seconds, max(deadline - self._now(), 0.0)))

    async def release(self) -> None:
        """Give the Lease up if we still hold it (best effort: on failure it simply expires)."""
        cfg = self.config
        try:
            lease = await self.kube.get("leases", cfg.lease_name, cfg.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            now = _micro_time(self._wall())
            spec.update({"holderIdentity": None, "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now})
            await self.kube.replace("leases", _with_spec(lease, spec))
            log.info("released lease %s/%s", cfg.namespace, cfg.lease_name)
        except KubeError as e:
            log.warning("could not release lease %s: %s (it will expire)", cfg.lease_name, e)

    async def run(
        self, work: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event, grace_s: float = 0.0
    ) -> None:
        """Campaign; while leading run ``work()``. On ``stop``: give ``work`` up to ``grace_s`` to finish
        (it should watch ``stop`` itself; renewals go on meanwhile), cancel it, release the Lease.
        Raises ``LeadershipLost`` when renewal fails; ``work``'s own exception propagates (after release)."""
        self.running = True
        try:
            if not await self.acquire(stop):
                return
            task = asyncio.create_task(work(), name="leader-work")
            renew = asyncio.create_task(self._renew_until_lost(), name="lease-renew")
            stopped = asyncio.create_task(stop.wait(), name="stop")
            try:
                await asyncio.wait({task, renew, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stopped.done() and not task.done() and not renew.done():
                    await asyncio.wait({task, renew}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
                lost = renew.done() and not renew.cancelled()
            finally:
                for t in (task, renew, stopped):
                    t.cancel()
                await asyncio.gather(task, renew, stopped, return_exceptions=True)
                self.is_leader = False
                self._held_since = None
            if lost:
                raise LeadershipLost(f"could not renew lease {self.config.lease_name} within the renew deadline")
            await self.release()
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                raise error
        finally:
            self.running = False


def _with_spec(lease: Obj, spec: dict[str, Any]) -> Obj:
    """The Lease as read (name, namespace, resourceVersion precondition) with a new spec."""
    meta = lease.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "resourceVersion", "uid", "labels", "annotations") if k in meta}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": keep, "spec": spec}
