"""The one control loop of nos: reconcile, then wait for a change, the requested requeue or the resync.

A reconcile returns when it wants to run again (``requeue_after`` seconds, None: only on a change or
at the resync), as controller-runtime's ``Result`` does. The loop knows nothing else about it: the
partitioner's batch deadline and report timeout, the agent's report interval are the reconcilers' and
their configuration's. The same loop runs in the cluster (``WakeTrigger``: asyncio events, wall
clock), once (``--once``) and in ``nos simulate`` (a trigger on the virtual clock).

Waiting is behind ``Trigger``, the loop's only view of time and of changes: ``set`` (a watch saw a
change) wakes it, ``stop`` ends it between reconciles (a running reconcile is never cancelled here:
its NVML calls run on a worker thread and its patches are independent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

DEBOUNCE_SECONDS = 1.0
"""The processes' wait after a watch event, so a burst of changes costs one reconcile; the simulator
waits it too."""

Reconcile = Callable[[], Awaitable[float | None]]
"""One reconcile; returns ``requeue_after`` (seconds until it wants to run again, None: no wish)."""


class Trigger(Protocol):
    """What the loop waits on between reconciles."""

    def stopped(self) -> bool: ...

    def clear(self) -> None:
        """Forget the changes seen so far (called right before a reconcile, which sees them all)."""
        ...

    async def wait(self, timeout: float) -> bool:
        """Until a change, a stop or ``timeout`` seconds; True when woken before the timeout."""
        ...

    async def settle(self, seconds: float) -> None:
        """Let a burst of changes pass (``seconds``); only a stop ends it early."""
        ...


class WakeTrigger:
    """The cluster's trigger: asyncio events on the event loop's clock. ``set()`` is a change."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.stop = stop or asyncio.Event()
        self._wake = asyncio.Event()

    def set(self) -> None:
        self._wake.set()

    def stopped(self) -> bool:
        return self.stop.is_set()

    def clear(self) -> None:
        self._wake.clear()

    async def wait(self, timeout: float) -> bool:
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.stop.wait())}
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return bool(done)
        finally:
            for w in waiters:
                w.cancel()

    async def settle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)


def loop_time() -> float:
    """The running event loop's clock (monotonic; virtual under looptime and in tests)."""
    return asyncio.get_running_loop().time()


class Progress:
    """When the running reconcile started (None between reconciles): a reconcile running past a
    limit means the process is stuck (``/healthz``); waiting is progress. Read on the event loop."""

    def __init__(self, clock: Callable[[], float] = loop_time) -> None:
        self.clock = clock
        self.started: float | None = None
        self.reconciles = 0

    def stalled(self, limit_seconds: float) -> bool:
        started = self.started
        return started is not None and self.clock() - started >= limit_seconds


async def run_loop(
    reconcile: Reconcile,
    trigger: Trigger,
    *,
    resync_seconds: float,
    debounce_seconds: float = 0.0,
    once: bool = False,
    progress: Progress | None = None,
) -> None:
    """Reconcile until ``trigger`` stops (after one reconcile with ``once``). Between reconciles wait
    ``min(requeue_after, resync_seconds)`` or until a change; after a change wait ``debounce_seconds``
    more, so a burst of changes costs one reconcile."""
    progress = progress or Progress()
    while not trigger.stopped():
        trigger.clear()
        progress.started = progress.clock()
        try:
            requeue = await reconcile()
        finally:
            progress.started = None
        progress.reconciles += 1
        if once:
            return
        wait = resync_seconds if requeue is None else min(requeue, resync_seconds)
        woken = await trigger.wait(wait)
        if woken and debounce_seconds > 0 and not trigger.stopped():
            await trigger.settle(debounce_seconds)
