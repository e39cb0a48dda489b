"""Issue 10 finding 4 (``nos.partitioner``): a long plan never blocks the partitioner's event loop, ``/healthz`` follows
loop progress, and a replica whose Lease may have passed on writes nothing (fencing)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from nos.config import LeaderElectionConfig, PartitionerConfig
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance as I
from nos.partitioner.controller import Partitioner
from nos.planner.cluster import ClusterState
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from nos.runtime.leader import LeaderElector
from tests.partitioner.test_runner import fast_config, partitioner
from tests.planner.factories import node, pod
from tests.runtime.helpers import eventually

pytestmark = pytest.mark.timeout(20)

ELECTION = LeaderElectionConfig(
    namespace="nos-system", lease_duration_seconds=1.5, renew_deadline_seconds=1.0, retry_period_seconds=0.2
)


def cluster() -> MemoryKube:
    kube = MemoryKube(component="partitioner")
    kube.add_node(node("a", status={0: [I(0, "7g.80gb")]}))
    kube.add_pod(pod("p1", "1g.10gb"))
    return kube


def slow(seconds: float) -> Any:
    def planner(state: ClusterState, plan_id: str) -> Plan:
        time.sleep(seconds)  # blocking, like a plan over 50k pods
        return plan_state(state, plan_id=plan_id)

    return planner


async def test_a_leader_whose_lease_may_have_passed_writes_nothing() -> None:
    """The old leader's loop was blocked past the renew deadline (the plan ran on it): before, it
    wrote its stale plan as soon as the loop came back; now the fence stops every write."""
    kube = cluster()
    elector = LeaderElector(kube, "a", ELECTION)
    assert await elector.try_acquire_or_renew()
    elector.is_leader = True
    assert elector.holds_lease()
    part = Partitioner(
        kube,
        time.time,
        PartitionerConfig(batch_window_idle_seconds=0),
        planner=slow(ELECTION.renew_deadline_seconds + 0.2),
        fence=elector.holds_lease,
    )
    result = await part.cycle()
    assert result.plan is not None and result.plan.nodes["a"].write  # it did want to write
    assert result.fenced and result.written == []
    assert "patch nodes" not in kube.calls and kube.events == []
    assert not elector.holds_lease()


async def test_a_leader_that_holds_the_lease_writes() -> None:
    kube = cluster()
    elector = LeaderElector(kube, "a", ELECTION)
    assert await elector.try_acquire_or_renew()
    elector.is_leader = True
    part = Partitioner(kube, time.time, PartitionerConfig(batch_window_idle_seconds=0), fence=elector.holds_lease)
    result = await part.cycle()
    assert result.written == ["a"] and not result.fenced


async def test_planning_runs_off_the_event_loop() -> None:
    kube = cluster()
    part = Partitioner(
        kube, time.time, PartitionerConfig(batch_window_idle_seconds=0), planner=slow(0.6), offload=asyncio.to_thread
    )
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    result = await part.cycle()
    ticker.cancel()
    assert result.written == ["a"]
    assert ticks >= 10  # the loop kept turning (it answers probes and renews the Lease meanwhile)


async def test_liveness_follows_cycle_progress() -> None:
    kube = cluster()
    live_config = fast_config()
    live_config.partitioner.liveness_timeout_seconds = 0.3
    manager, runner = partitioner(kube, live_config)
    runner.partitioner.planner = slow(1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    try:
        assert manager.live()
        await eventually(lambda: not manager.live(), timeout=5, what="a stuck cycle to fail liveness")
        await eventually(manager.live, timeout=5, what="liveness after the cycle ended")
        assert runner.cycles >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
