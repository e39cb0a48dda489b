"""The MIG agent as the runtime manager runs it (``nos.agent.runner``): its Node's cache wakes it on
spec changes only, SIGTERM exits 0, and the offline mode runs the same loop without a cache."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from nos.agent.agent import MigAgent, ReconcileResult
from nos.agent.runner import AgentRunner
from nos.config import AgentConfig, ServerConfig
from nos.contract.annotations import STATUS_PLAN, encode_spec
from nos.gpu.simulated import SimulatedNvml
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import annotations_patch
from nos.mig.layout import Instance as I
from nos.runtime.manager import Manager
from tests.runtime.helpers import eventually, sample

pytestmark = pytest.mark.timeout(20)

SPEC_A = encode_spec({0: [I(0, "3g.40gb"), I(4, "3g.40gb")]}, "p1")
SPEC_B = encode_spec({0: [I(0, "7g.80gb")]}, "p2")


def agent_node(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"nos.nebuly.ai/gpu-partitioning": "mig"}
    return {"metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {})}}


def new_nvml() -> SimulatedNvml:
    return SimulatedNvml.new("A100-80GB", 1)


def agent(kube: MemoryKube, nvml: SimulatedNvml, manager: Manager) -> MigAgent:
    config = AgentConfig(report_interval_seconds=1000, restart_device_plugin=False)
    return MigAgent("n1", nvml, kube, None, config, recorder=manager.recorder)


async def test_agent_reconciles_at_once_on_spec_change_but_not_on_its_own_status() -> None:
    kube, nvml = MemoryKube(), new_nvml()
    kube.add_node(agent_node("n1", SPEC_A))
    kube.add_node(agent_node("n2", SPEC_B))
    manager = Manager(kube, debounce_seconds=0.01)
    runner = AgentRunner(manager, agent(kube, nvml, manager))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    await eventually(lambda: nvml.layout(0) == (I(0, "3g.40gb"), I(4, "3g.40gb")), what="first spec applied")
    await eventually(lambda: kube.store.get("nodes", "n1")["metadata"]["annotations"].get(STATUS_PLAN) == "p1")
    assert manager.ready()
    await asyncio.sleep(0.2)
    settled = runner.reconciles
    await kube.patch("nodes", "n2", annotations_patch({"unrelated": "x"}))  # another node: not even in the cache
    await kube.patch("nodes", "n1", annotations_patch({"some-label-ish": "x"}))  # not the spec: no reconcile
    await asyncio.sleep(0.2)
    assert runner.reconciles == settled and list(runner.node.cache) == ["n1"]
    stale = {k: None for k in SPEC_A}
    await kube.patch("nodes", "n1", annotations_patch({**stale, **SPEC_B}))
    await eventually(lambda: nvml.layout(0) == (I(0, "7g.80gb"),), timeout=2, what="second spec applied")
    assert sample(manager.metrics, "nos_agent_applies_total", outcome="success") == 2
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert kube.calls[-1] == "close"


async def test_a_deleted_node_is_not_reconciled_until_it_comes_back() -> None:
    kube, nvml = MemoryKube(), new_nvml()
    kube.add_node(agent_node("n1", SPEC_A))
    manager = Manager(kube, debounce_seconds=0.01)
    runner = AgentRunner(manager, agent(kube, nvml, manager))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(runner, stop))
    await eventually(lambda: runner.reconciles == 1, what="first reconcile")
    kube.store.delete("nodes", "n1")
    await asyncio.sleep(0.2)
    assert runner.reconciles == 1
    kube.add_node(agent_node("n1", SPEC_B))
    await eventually(lambda: nvml.layout(0) == (I(0, "7g.80gb"),), what="spec of the returned node applied")
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_agent_answers_sigterm_with_exit_zero() -> None:
    kube, nvml = MemoryKube(), new_nvml()
    kube.add_node(agent_node("n1", SPEC_A))
    manager = Manager(kube, server=ServerConfig(metrics_port=0, health_port=0))
    task = asyncio.create_task(manager.run(AgentRunner(manager, agent(kube, nvml, manager))))
    await eventually(lambda: nvml.layout(0) != (), what="applied")
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0


async def test_offline_once_reconciles_once_without_a_cache_and_hands_the_result_over() -> None:
    kube, nvml = MemoryKube(), new_nvml()
    kube.add_node(agent_node("n1", SPEC_A))
    manager = Manager(kube)
    seen: list[ReconcileResult] = []
    runner = AgentRunner(manager, agent(kube, nvml, manager), watch=False, after=seen.append)
    assert await manager.run(runner, once=True) == 0
    assert manager.reflectors == [] and "watch" not in kube.calls
    assert len(seen) == 1 and seen[0].patch and runner.last is seen[0]
    assert nvml.layout(0) == (I(0, "3g.40gb"), I(4, "3g.40gb"))


async def test_offline_a_failing_reconcile_propagates() -> None:
    kube, nvml = MemoryKube(), new_nvml()  # no Node at all
    manager = Manager(kube)
    runner = AgentRunner(manager, agent(kube, nvml, manager), watch=False)
    with pytest.raises(Exception, match="n1"):
        await manager.run(runner, once=True)
    assert kube.calls[-1] == "close"
