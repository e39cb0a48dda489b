"""The partitioner as the runtime manager runs it (``nos.partitioner.runner``): MemoryKube, real time,
short windows; Lease, caches, SIGTERM and exit codes through ``Manager.run``."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from nos.config import NosConfig, load_config
from nos.contract.annotations import SPEC_PLAN, STATUS_PLAN
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Conflict, annotations_patch
from nos.mig.layout import Instance as I
from nos.partitioner.runner import PartitionerRunner
from nos.runtime.manager import Manager
from tests.planner.factories import node, pod
from tests.runtime.helpers import eventually, sample

pytestmark = pytest.mark.timeout(20)

LEASE = ("nos-system", "nos-partitioner")


def fast_config(**server: int) -> NosConfig:
    return load_config(
        None,
        env={},
        overrides={
            "partitioner": {
                "batchWindowIdleSeconds": 0.2,
                "batchWindowTimeoutSeconds": 1,
                "leaderElection": {"leaseDurationSeconds": 1, "renewDeadlineSeconds": 0.6, "retryPeriodSeconds": 0.1},
            },
            "server": {"metricsPort": 0, "healthPort": 0, **server},
        },
    )


def cluster() -> MemoryKube:
    kube = MemoryKube(component="partitioner")
    kube.add_node(node("a", status={0: [I(0, "7g.80gb")]}))
    kube.add_node(node("unlabelled", status={0: [I(0, "7g.80gb")]}, labels={"nos.nebuly.ai/gpu-partitioning": "no"}))
    return kube


def partitioner(
    kube: MemoryKube, config: NosConfig, identity: str = "p-1", server: bool = False
) -> tuple[Manager, PartitionerRunner]:
    """What ``nos partitioner`` builds, with a short debounce."""
    manager = Manager(
        kube,
        server=config.server if server else None,
        election=config.partitioner.leader_election,
        identity=identity,
        debounce_seconds=0.05,
    )
    return manager, PartitionerRunner(manager, config.partitioner, resync_seconds=30)


def lease_holder(kube: MemoryKube) -> str | None:
    return kube.store.get("leases", LEASE[1], LEASE[0])["spec"].get("holderIdentity")


def spec_plan(kube: MemoryKube, name: str) -> str | None:
    return kube.store.get("nodes", name)["metadata"]["annotations"].get(SPEC_PLAN)


async def test_pending_pod_gets_spec_annotations_once_the_batch_closes_then_stop_releases() -> None:
    kube = cluster()
    manager, runner = partitioner(kube, fast_config())
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    await eventually(lambda: manager.elector is not None and manager.elector.is_leader, what="leadership")
    assert manager.ready()
    assert sample(manager.metrics, "nos_partitioner_leader") == 1
    await asyncio.sleep(0.3)
    assert spec_plan(kube, "a") == "plan-0"  # nothing to do without candidates
    loop = asyncio.get_running_loop()
    kube.add_pod(pod("p1", "1g.10gb"))
    added = loop.time()
    await eventually(lambda: spec_plan(kube, "a") != "plan-0", what="spec written on node a")
    assert loop.time() - added >= 0.2  # not before the idle window closed
    annotations = kube.store.get("nodes", "a")["metadata"]["annotations"]
    assert any(k.startswith("nos.nebuly.com/spec-gpu-0-1g.10gb") for k in annotations)
    assert spec_plan(kube, "unlabelled") == "plan-0"  # unmanaged nodes are never written
    assert "list nodes" not in kube.calls and "list pods" not in kube.calls  # cycles read the caches
    assert sample(manager.metrics, "nos_partitioner_nodes_changed_total") == 1
    assert sample(manager.metrics, "nos_cache_events_total", resource="pods", type="ADDED") == 1
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert not lease_holder(kube)
    assert kube.calls[-1] == "close"  # the manager owns the client
    assert sample(manager.metrics, "nos_partitioner_leader") == 0


async def test_the_batch_deadline_wakes_the_loop_without_a_change() -> None:
    """The cycle asks to run again when the open batch closes (``requeue_after``), far before the resync."""
    kube = cluster()
    config = fast_config()
    config.partitioner.batch_window_idle_seconds = 0.5
    manager, runner = partitioner(kube, config)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    await eventually(lambda: runner.cycles >= 1, what="first cycle")
    kube.add_pod(pod("p1", "1g.10gb"))
    await eventually(lambda: runner.cycles >= 2, what="the cycle the change woke")
    cycles = runner.cycles
    await eventually(lambda: spec_plan(kube, "a") != "plan-0", timeout=3, what="the plan at the batch deadline")
    assert runner.cycles == cycles + 1  # one more cycle, at the deadline (resync is 30 s)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_agent_report_wakes_the_next_plan_without_waiting_for_the_timeout() -> None:
    kube = cluster()
    manager, runner = partitioner(kube, fast_config())
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    kube.add_pod(pod("p1", "1g.10gb"))
    await eventually(lambda: spec_plan(kube, "a") != "plan-0", what="first plan")
    first = spec_plan(kube, "a")
    kube.add_pod(pod("p2", "1g.10gb"))
    await asyncio.sleep(0.5)
    assert spec_plan(kube, "a") == first  # waiting for the agent to report the first plan
    await kube.patch("nodes", "a", annotations_patch({STATUS_PLAN: first}))
    await eventually(lambda: runner.partitioner.last_plan_id != first, what="second plan after the report")
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_sigterm_stops_the_partitioner_cleanly_and_releases_the_lease() -> None:
    kube = cluster()
    manager, runner = partitioner(kube, fast_config(), "p-sig", server=True)
    task = asyncio.create_task(manager.run(runner))
    await eventually(lambda: "get leases" in kube.calls and lease_holder(kube) == "p-sig", what="leadership")
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # our handler, or this would kill pytest
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0
    assert not lease_holder(kube)


async def test_lost_lease_exits_non_zero() -> None:
    kube = cluster()
    manager, runner = partitioner(kube, fast_config(), "p-lost")
    task = asyncio.create_task(manager.run(runner, asyncio.Event()))
    await eventually(lambda: "get leases" in kube.calls and lease_holder(kube) == "p-lost", what="leadership")
    kube.fail_next("replace leases", Conflict("taken"))
    assert await asyncio.wait_for(task, 5) == 1
    assert kube.calls[-1] == "close"


async def test_without_leader_election_the_runner_plans_directly() -> None:
    kube = cluster()
    cfg = fast_config()
    cfg.partitioner.leader_election.enabled = False
    manager, runner = partitioner(kube, cfg, "solo")
    assert manager.elector is None and manager.may_write()
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    kube.add_pod(pod("p1", "1g.10gb"))
    await eventually(lambda: spec_plan(kube, "a") != "plan-0", what="spec written")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert "get leases" not in kube.calls


async def test_a_failing_cycle_is_retried_without_ending_leadership() -> None:
    kube = cluster()
    manager, runner = partitioner(kube, fast_config())
    calls = {"n": 0}
    real = runner.partitioner.cycle

    async def flaky() -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug")
        return await real()

    runner.partitioner.cycle = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    kube.add_pod(pod("p1", "1g.10gb"))
    await eventually(lambda: spec_plan(kube, "a") != "plan-0", timeout=10, what="a plan after the failure")
    assert manager.elector is not None and manager.elector.is_leader
    stop.set()
    await asyncio.wait_for(task, 5)
