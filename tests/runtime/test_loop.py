"""The one control loop (``nos.runtime.loop``) on virtual time (looptime): requeue, resync, wake-ups,
debounce, stop and ``once``."""

from __future__ import annotations

import asyncio

import pytest

from nos.runtime.loop import Progress, WakeTrigger, run_loop

pytestmark = pytest.mark.looptime


class Recorder:
    """A reconcile that records the loop time of each call and returns the next scripted requeue."""

    def __init__(self, requeues: list[float | None] | None = None, takes: float = 0.0) -> None:
        self.calls: list[float] = []
        self.requeues = list(requeues or [])
        self.takes = takes

    async def __call__(self) -> float | None:
        self.calls.append(asyncio.get_running_loop().time())
        if self.takes:
            await asyncio.sleep(self.takes)
        return self.requeues.pop(0) if self.requeues else None


def start(reconcile: Recorder, trigger: WakeTrigger, **kw: float) -> asyncio.Task[None]:
    options = {"resync_seconds": 60.0, **kw}
    return asyncio.create_task(run_loop(reconcile, trigger, **options))  # type: ignore[arg-type]


async def stop(trigger: WakeTrigger, task: asyncio.Task[None]) -> None:
    trigger.stop.set()
    await asyncio.wait_for(task, 1)


async def test_requeue_after_is_honoured_and_resync_bounds_it() -> None:
    rec, trigger = Recorder([5.0, 200.0, None]), WakeTrigger()
    t0 = asyncio.get_running_loop().time()
    task = start(rec, trigger)
    await asyncio.sleep(200)
    # 5 s as asked; 200 s is more than the resync (60); None: the resync
    assert [round(t - t0) for t in rec.calls] == [0, 5, 65, 125, 185]
    await stop(trigger, task)


async def test_a_change_wakes_the_loop_at_once_and_a_burst_costs_one_reconcile() -> None:
    rec, trigger = Recorder(), WakeTrigger()
    t0 = asyncio.get_running_loop().time()
    task = start(rec, trigger, debounce_seconds=1.0)
    await asyncio.sleep(10)
    for _ in range(5):  # a burst of changes within the debounce
        trigger.set()
        await asyncio.sleep(0.1)
    await asyncio.sleep(5)
    assert [round(t - t0, 1) for t in rec.calls] == [0, 11.0]  # woken at 10, settled 1 s, one reconcile
    await stop(trigger, task)


async def test_a_change_during_a_reconcile_runs_the_next_one_right_after() -> None:
    rec, trigger = Recorder(takes=2.0), WakeTrigger()
    t0 = asyncio.get_running_loop().time()
    task = start(rec, trigger)
    await asyncio.sleep(1)
    trigger.set()  # while the first reconcile runs
    await asyncio.sleep(5)
    assert [round(t - t0) for t in rec.calls] == [0, 2]
    await stop(trigger, task)


async def test_stop_ends_the_loop_between_reconciles_without_cancelling_one() -> None:
    rec, trigger = Recorder(takes=30.0), WakeTrigger()
    task = start(rec, trigger)
    await asyncio.sleep(1)
    trigger.stop.set()
    await asyncio.sleep(10)
    assert not task.done()  # the running reconcile finishes
    await asyncio.wait_for(task, 30)
    assert len(rec.calls) == 1


async def test_once_reconciles_once() -> None:
    rec, trigger = Recorder([0.0]), WakeTrigger()
    await asyncio.wait_for(run_loop(rec, trigger, resync_seconds=1, once=True), 1)
    assert len(rec.calls) == 1


async def test_progress_marks_a_running_reconcile_only() -> None:
    rec, trigger = Recorder(takes=10.0), WakeTrigger()
    progress = Progress(clock=asyncio.get_running_loop().time)
    task = asyncio.create_task(run_loop(rec, trigger, resync_seconds=100, progress=progress))
    await asyncio.sleep(6)
    assert progress.started is not None and progress.stalled(5) and not progress.stalled(7)
    await asyncio.sleep(50)  # waiting for the resync is progress
    assert progress.started is None and not progress.stalled(0) and progress.reconciles == 1
    await stop(trigger, task)


async def test_a_failing_reconcile_ends_the_loop_and_clears_progress() -> None:
    async def boom() -> float | None:
        raise RuntimeError("bug")

    progress = Progress()
    with pytest.raises(RuntimeError):
        await run_loop(boom, WakeTrigger(), resync_seconds=1, progress=progress)
    assert progress.started is None
