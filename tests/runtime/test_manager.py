"""The runtime manager (``nos.runtime.manager``) around a scripted controller: caches wake the loop,
probes, the HTTP server's public exposition, closing the controller and the client on every exit.
Virtual time (looptime) except where real sockets serve the probes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from nos.config import LeaderElectionConfig, ServerConfig
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Obj
from nos.runtime.manager import Manager
from tests.runtime.helpers import eventually, sample


class Scripted:
    """A controller that counts reconciles and can be made slow, failing or unhealthy."""

    def __init__(self, resync_seconds: float = 30.0, liveness_timeout_seconds: float = 60.0) -> None:
        self.resync_seconds, self.liveness_timeout_seconds = resync_seconds, liveness_timeout_seconds
        self.reconciles = 0
        self.takes = 0.0
        self.fail = False
        self.is_healthy = True
        self.closed = False

    async def reconcile(self) -> float | None:
        self.reconciles += 1
        if self.fail:
            raise RuntimeError("bug")
        if self.takes:
            await asyncio.sleep(self.takes)
        return None

    def healthy(self) -> bool:
        return self.is_healthy

    def close(self) -> None:
        self.closed = True


def node(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": dict(labels)}}


@pytest.mark.looptime
async def test_cache_changes_wake_the_loop_unless_filtered_out() -> None:
    kube = MemoryKube()
    kube.add_node(node("a"))
    manager = Manager(kube, debounce_seconds=0.01)
    manager.watch("nodes", relevant=lambda kind, obj: obj["metadata"]["labels"].get("wake") == "yes")
    ctl = Scripted()
    stop = asyncio.Event()
    assert not manager.ready()  # caches not synced yet
    task = asyncio.create_task(manager.run(ctl, stop))
    await eventually(lambda: ctl.reconciles == 1 and manager.ready(), what="first reconcile after sync")
    kube.add_node(node("b", wake="no"))
    await asyncio.sleep(0.2)
    assert ctl.reconciles == 1  # not relevant: no wake-up (the resync is 30 s)
    kube.add_node(node("c", wake="yes"))
    await eventually(lambda: ctl.reconciles == 2, what="a relevant change woke the loop")
    assert sample(manager.metrics, "nos_cache_events_total", resource="nodes", type="ADDED") == 3
    assert sample(manager.metrics, "nos_cache_relists_total", resource="nodes") == 1
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert ctl.closed and kube.calls[-1] == "close"


async def test_probes_and_metrics_over_http() -> None:
    kube = MemoryKube()
    manager = Manager(kube, server=ServerConfig(metrics_port=0, health_port=0))
    manager.watch("nodes")
    ctl = Scripted(liveness_timeout_seconds=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(ctl, stop))
    await eventually(lambda: manager.server is not None and bool(manager.server.ports), what="serving")
    assert manager.server is not None
    ports = manager.server.ports
    base = "http://127.0.0.1:{}/{}"
    async with aiohttp.ClientSession() as http:
        await eventually(lambda: ctl.reconciles == 1, what="first reconcile")
        async with http.get(base.format(ports["health"], "readyz")) as resp:
            assert resp.status == 200
        async with http.get(base.format(ports["metrics"], "metrics")) as resp:
            assert "nos_cache_relists_total" in await resp.text()
        ctl.is_healthy = False
        async with http.get(base.format(ports["health"], "healthz")) as resp:
            assert resp.status == 503
        ctl.is_healthy = True
        async with http.get(base.format(ports["health"], "healthz")) as resp:
            assert resp.status == 200
    stop.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.looptime
async def test_a_reconcile_running_past_the_liveness_timeout_fails_liveness() -> None:
    manager = Manager(MemoryKube())
    ctl = Scripted(liveness_timeout_seconds=0.1)
    ctl.takes = 0.5
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(ctl, stop))
    await eventually(lambda: not manager.live(), what="a stuck reconcile")
    await eventually(manager.live, what="waiting again")
    stop.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.looptime
async def test_a_failing_reconcile_still_closes_the_controller_and_the_client() -> None:
    kube = MemoryKube()
    manager = Manager(kube)
    ctl = Scripted()
    ctl.fail = True
    with pytest.raises(RuntimeError):
        await manager.run(ctl)
    assert ctl.closed and kube.calls[-1] == "close"


@pytest.mark.looptime
async def test_with_election_the_loop_runs_only_while_leading_and_writes_are_fenced() -> None:
    kube = MemoryKube()
    election = LeaderElectionConfig(lease_name="m", namespace="ns")
    first = Manager(kube, election=election, identity="first")
    second = Manager(kube, election=election, identity="second")
    one, two = Scripted(), Scripted()
    stops = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(first.run(one, stops[0])),
        asyncio.create_task(second.run(two, stops[1])),
    ]
    await asyncio.sleep(5)
    assert (one.reconciles >= 1) != (two.reconciles >= 1)  # one leader works
    leader, standby = (first, second) if one.reconciles else (second, first)
    assert leader.may_write() and not standby.may_write() and standby.live()
    assert sample(leader.metrics, "nos_partitioner_leader") == 1
    assert sample(standby.metrics, "nos_partitioner_leader") == 0
    for stop in stops:
        stop.set()
    assert await asyncio.gather(*tasks) == [0, 0]
