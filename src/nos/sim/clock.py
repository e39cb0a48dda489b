"""A virtual clock for discrete-event simulation of asyncio code.

Hours of cluster time pass in seconds: nothing ever waits for real time. Two kinds of things live on
the clock's heap, ordered by (time, insertion order):

* plain callbacks (``at``): pod arrivals, completions, the device plugin coming back;
* *actors*: long-running coroutines (the partitioner loop, one loop per agent) that wait with
  ``await clock.sleep(s)``; the clock hands them in as ``sleep`` and ``clock`` (the same injection
  points production uses).

Exactly one thing runs at a time: the driver wakes one actor and waits until it sleeps again (or
ends) before it takes the next entry. Actors may still use threads (the agent runs NVML on a worker
thread), yet the order of everything is fixed by the heap, so a run is deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

EPOCH = 1_700_000_000.0
"""Virtual time 0 as Unix seconds (plan ids and timestamps look real)."""


@dataclass
class _Wake:
    future: asyncio.Future[None]
    actor: str
    cancelled: bool = False


@dataclass(order=True)
class _Entry:
    time: float
    seq: int
    item: Callable[[], None] | _Wake | _Start = field(compare=False)


@dataclass
class _Start:
    name: str
    make: Callable[[], Coroutine[Any, Any, None]]


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0
        """Seconds since the start of the run."""
        self._heap: list[_Entry] = []
        self._seq = 0
        self._idle: asyncio.Future[None] | None = None
        self._current: str | None = None
        self._sleeping: dict[str, tuple[float, _Wake]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- what actors and models see -------------------------------------------------------------------
    def now(self) -> float:
        """Unix-like seconds (the ``clock`` injected into the partitioner and the agents)."""
        return EPOCH + self.t

    def at(self, t: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` at virtual time ``t`` (not before now)."""
        self._push(max(t, self.t), callback)

    def after(self, delay: float, callback: Callable[[], None]) -> None:
        self.at(self.t + delay, callback)

    async def sleep(self, seconds: float) -> None:
        """Park the running actor for ``seconds`` of virtual time."""
        actor = self._current
        if actor is None:
            raise RuntimeError("VirtualClock.sleep called outside an actor")
        loop = asyncio.get_running_loop()
        wake = _Wake(loop.create_future(), actor)
        when = self.t + max(seconds, 0.0)
        self._sleeping[actor] = (when, wake)
        self._push(when, wake)
        self._park()
        await wake.future
        self._current = actor

    def kick(self, actor: str) -> None:
        """Wake a sleeping actor now instead of later (a watch event reaching a controller)."""
        entry = self._sleeping.get(actor)
        if entry is None or entry[0] <= self.t:
            return
        _, wake = entry
        wake.cancelled = True
        fresh = _Wake(wake.future, actor)
        self._sleeping[actor] = (self.t, fresh)
        self._push(self.t, fresh)

    def spawn(self, name: str, make: Callable[[], Coroutine[Any, Any, None]], at: float | None = None) -> None:
        """Start actor ``name`` (a coroutine factory) at time ``at`` (default now)."""
        self._push(self.t if at is None else at, _Start(name, make))

    # -- the driver ---------------------------------------------------------------------------------------
    async def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        """Process entries in time order up to ``end`` (or until ``stop()`` is true); the clock then
        reads ``end`` (or the stopping time). An exception raised by an actor or callback propagates."""
        while self._heap and self._heap[0].time <= end:
            entry = heapq.heappop(self._heap)
            self.t = entry.time
            item = entry.item
            if isinstance(item, _Wake):
                if item.cancelled:
                    continue
                self._sleeping.pop(item.actor, None)
                await self._resume(item.actor, partial(item.future.set_result, None))
            elif isinstance(item, _Start):
                await self._resume(item.name, partial(self._start, item))
            else:
                item()
            if stop is not None and stop():
                return
        self.t = max(self.t, end)

    async def close(self) -> None:
        """Cancel every actor (they are parked, so this is immediate)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):  # ending anyway
                await task
        self._tasks.clear()

    # -- internals --------------------------------------------------------------------------------------
    def _push(self, t: float, item: Callable[[], None] | _Wake | _Start) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Entry(t, self._seq, item))

    def _park(self) -> None:
        self._current = None
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _start(self, start: _Start) -> None:
        async def body() -> None:
            self._current = start.name
            try:
                await start.make()
            except BaseException as e:
                if self._idle is not None and not self._idle.done():
                    self._idle.set_exception(e)
                raise
            else:
                self._park()

        task = asyncio.get_running_loop().create_task(body(), name=start.name)
        self._tasks[start.name] = task

    async def _resume(self, actor: str, go: Callable[[], None]) -> None:
        self._idle = asyncio.get_running_loop().create_future()
        self._current = actor
        go()
        await self._idle


class ClockTrigger:
    """``nos.runtime.loop.Trigger`` on the virtual clock, for actor ``actor``: waiting is a virtual
    sleep, ``set`` a kick (a watch event reaching the controller). The run's end cancels the actors,
    so it never stops by itself."""

    def __init__(self, clock: VirtualClock, actor: str) -> None:
        self.clock, self.actor = clock, actor

    def set(self) -> None:
        self.clock.kick(self.actor)

    def stopped(self) -> bool:
        return False

    def clear(self) -> None:
        pass

    async def wait(self, timeout: float) -> bool:
        until = self.clock.t + max(timeout, 0.0)
        await self.clock.sleep(timeout)
        return self.clock.t < until

    async def settle(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
