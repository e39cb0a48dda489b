"""The partitioner and agent runners end to end on MemoryKube (real time, short windows)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from nos.agent.agent import MigAgent
from nos.agent.device_plugin import DevicePluginRestarter
from nos.agent.runner import AgentRunner
from nos.cli.agent import serve_agent
from nos.cli.partitioner import serve
from nos.config import AgentConfig, DevicePluginConfig, NosConfig, load_config
from nos.contract.annotations import SPEC_PLAN, STATUS_PLAN, encode_spec
from nos.gpu.simulated import SimulatedNvml
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Conflict, annotations_patch
from nos.mig.layout import Instance as I
from nos.partitioner.runner import PartitionerRunner
from tests.planner.factories import node, pod
from tests.runtime.helpers import eventually

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


def lease_holder(kube: MemoryKube) -> str | None:
    return kube.store.get("leases", LEASE[1], LEASE[0])["spec"].get("holderIdentity")


def spec_plan(kube: MemoryKube, name: str) -> str | None:
    return kube.store.get("nodes", name)["metadata"]["annotations"].get(SPEC_PLAN)


async def test_pending_pod_gets_spec_annotations_once_the_batch_closes_then_stop_releases() -> None:
    kube = cluster()
    runner = PartitionerRunner(kube, fast_config().partitioner, "p-1", min_interval_s=0.05, resync_s=30)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: runner.elector is not None and runner.elector.is_leader, what="leadership")
    assert runner.ready()
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
    assert runner.metrics.nodes_changed._value.get() == 1
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not lease_holder(kube)


async def test_agent_report_wakes_the_next_plan_without_waiting_for_the_timeout() -> None:
    kube = cluster()
    runner = PartitionerRunner(kube, fast_config().partitioner, "p-1", min_interval_s=0.05, resync_s=30)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
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
    task = asyncio.create_task(serve(kube, fast_config(), "p-sig", min_interval_s=0.05))
    await eventually(lambda: "get leases" in kube.calls and lease_holder(kube) == "p-sig", what="leadership")
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # our handler, or this would kill pytest
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0
    assert not lease_holder(kube)


async def test_lost_lease_exits_non_zero() -> None:
    kube = cluster()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(kube, fast_config(), "p-lost", stop=stop, min_interval_s=0.05))
    await eventually(lambda: "get leases" in kube.calls and lease_holder(kube) == "p-lost", what="leadership")
    kube.fail_next("replace leases", Conflict("taken"))
    assert await asyncio.wait_for(task, 5) == 1


async def test_without_leader_election_the_runner_plans_directly() -> None:
    kube = cluster()
    cfg = fast_config()
    cfg.partitioner.leader_election.enabled = False
    runner = PartitionerRunner(kube, cfg.partitioner, "solo", min_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    kube.add_pod(pod("p1", "1g.10gb"))
    await eventually(lambda: spec_plan(kube, "a") != "plan-0", what="spec written")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert "get leases" not in kube.calls


# -- agent ----------------------------------------------------------------------------------------
SPEC_A = encode_spec({0: [I(0, "3g.40gb"), I(4, "3g.40gb")]}, "p1")
SPEC_B = encode_spec({0: [I(0, "7g.80gb")]}, "p2")


def agent_node(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"nos.nebuly.ai/gpu-partitioning": "mig"}
    return {"metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {})}}


def new_nvml() -> SimulatedNvml:
    return SimulatedNvml.new("A100-80GB", 1)


def make_agent(kube: MemoryKube, nvml: SimulatedNvml) -> MigAgent:
    config = AgentConfig(report_interval_seconds=1000, restart_device_plugin=False)
    return MigAgent("n1", nvml, kube, None, config)


async def test_agent_reconciles_at_once_on_spec_change_but_not_on_its_own_status() -> None:
    kube, nvml = MemoryKube(), new_nvml()
    kube.add_node(agent_node("n1", SPEC_A))
    kube.add_node(agent_node("n2", SPEC_B))
    runner = AgentRunner(make_agent(kube, nvml), min_interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: nvml.layout(0) == (I(0, "3g.40gb"), I(4, "3g.40gb")), what="first spec applied")
    await eventually(lambda: kube.store.get("nodes", "n1")["metadata"]["annotations"].get(STATUS_PLAN) == "p1")
    assert runner.ready()
    await asyncio.sleep(0.2)
    settled = runner.reconciles
    await kube.patch("nodes", "n2", annotations_patch({"unrelated": "x"}))  # another node: not even in the cache
    await kube.patch("nodes", "n1", annotations_patch({"some-label-ish": "x"}))  # not the spec: no reconcile
    await asyncio.sleep(0.2)
    assert runner.reconciles == settled and list(runner.node.cache) == ["n1"]
    stale = {k: None for k in SPEC_A}
    await kube.patch("nodes", "n1", annotations_patch({**stale, **SPEC_B}))
    await eventually(lambda: nvml.layout(0) == (I(0, "7g.80gb"),), timeout=2, what="second spec applied")
    assert runner.metrics.applies.labels("success")._value.get() == 2
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_agent_serve_answers_sigterm_with_exit_zero() -> None:
    kube, nvml = MemoryKube(), new_nvml()
    kube.add_node(agent_node("n1", SPEC_A))
    settings = fast_config()
    task = asyncio.create_task(serve_agent(make_agent(kube, nvml), settings))
    await eventually(lambda: nvml.layout(0) != (), what="applied")
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0


@pytest.mark.parametrize("published", [True, False])
async def test_restart_waits_for_allocatable_with_timeout_and_event(published: bool) -> None:
    kube = MemoryKube()
    body = agent_node("n1")
    body["status"] = {"allocatable": {"cpu": "8", "nvidia.com/mig-7g.80gb": "1"}}
    kube.add_node(body)
    cfg = DevicePluginConfig(poll_seconds=0.01, timeout_seconds=0.5)
    restarter = DevicePluginRestarter(kube, "n1", cfg)

    async def plugin_publishes() -> None:
        await asyncio.sleep(0.1)
        current = kube.store.get("nodes", "n1")
        current["status"]["allocatable"] = {"cpu": "8", "nvidia.com/mig-7g.80gb": "0", "nvidia.com/mig-3g.40gb": "2"}
        kube.update_node(current)

    publisher = asyncio.create_task(plugin_publishes()) if published else None
    ok = await restarter.wait_allocatable({"nvidia.com/mig-3g.40gb": 2})
    assert ok is published
    assert [e.reason for e in kube.events] == ([] if published else ["DevicePluginAllocatableTimeout"])
    if publisher is not None:
        await publisher
