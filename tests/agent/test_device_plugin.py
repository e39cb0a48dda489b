from __future__ import annotations

import asyncio

import pytest

from nos.agent.device_plugin import DevicePluginRestarter
from nos.config import DevicePluginConfig
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import NotFound
from tests.agent.helpers import daemonset, node, plugin_pod


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s
        await asyncio.sleep(0)  # let the DaemonSet's tasks run


def cluster(*pods: dict[str, object]) -> MemoryKube:
    kube = MemoryKube()
    kube.add_node(node())
    kube.add_node(node("n2"))
    for p in pods:
        kube.add_pod(p)
    return kube


def pod_names(kube: MemoryKube) -> set[str]:
    return {p["metadata"]["name"] for p in kube.store.list("pods")[0]}


def restarter(kube: MemoryKube, clock: Clock, **cfg: object) -> DevicePluginRestarter:
    config = DevicePluginConfig.model_validate({"timeout_seconds": 10, "poll_seconds": 1, **cfg})
    return DevicePluginRestarter(kube, "n1", config, clock, clock.sleep)


@pytest.mark.asyncio
async def test_deletes_this_nodes_pod_and_waits_for_a_new_running_one() -> None:
    kube = cluster(
        plugin_pod("dp-old"),
        plugin_pod("dp-other", node_name="n2"),  # another node's plugin
        plugin_pod("dp-elsewhere", namespace="kube-system"),  # same label, other namespace
        plugin_pod("unrelated", labels={"app": "something-else"}),  # this namespace and node, other label
    )
    deleted: list[str] = []
    kube.on_pod_deleted(daemonset(kube, deleted, running=False))  # comes back Pending (no phase)
    clock = Clock()
    r = restarter(kube, clock)

    async def sleep(s: float) -> None:  # kubelet starts the new pod after 3 polls
        await clock.sleep(s)
        if len(clock.sleeps) == 3:
            await kube.settle()
            fresh = kube.store.get("pods", "dp-oldx", "gpu-operator")
            assert "status" not in fresh
            kube.update_pod({**fresh, "status": {"phase": "Running"}})

    r._sleep = sleep
    assert await r.restart()
    assert deleted == ["dp-old"]
    assert pod_names(kube) == {"dp-oldx", "dp-other", "dp-elsewhere", "unrelated"}
    assert len(clock.sleeps) == 3
    assert kube.events == []


@pytest.mark.asyncio
async def test_timeout_emits_a_warning_event_on_the_node() -> None:
    kube = cluster(plugin_pod("dp-old"))  # no DaemonSet: nothing comes back
    clock = Clock()
    assert not await restarter(kube, clock).restart()
    assert clock.now >= 10
    assert pod_names(kube) == set()
    [event] = kube.events
    assert (event.type, event.reason, event.regarding.kind, event.regarding.name) == (
        "Warning",
        "DevicePluginRestartTimeout",
        "Node",
        "n1",
    )


@pytest.mark.asyncio
async def test_old_pod_still_running_is_not_taken_for_the_new_one() -> None:
    kube = cluster(plugin_pod("dp-old"))
    kube.fail_next("delete pods", NotFound('pods "dp-old" not found'))  # deletion not effective yet
    clock = Clock()
    assert not await restarter(kube, clock).restart()
    assert kube.calls.count("delete pods") == 1 and pod_names(kube) == {"dp-old"}
    assert [e.reason for e in kube.events] == ["DevicePluginRestartTimeout"]


@pytest.mark.asyncio
async def test_zero_pods_retries_then_event() -> None:
    kube = cluster(plugin_pod("dp-other", node_name="n2"))
    clock = Clock()
    assert not await restarter(kube, clock, find_attempts=3).restart()
    assert kube.calls.count("list pods") == 3 and len(clock.sleeps) == 2
    assert "delete pods" not in kube.calls
    assert [e.reason for e in kube.events] == ["DevicePluginNotFound"]
    assert "found 0 (none)" in kube.events[0].note


@pytest.mark.asyncio
async def test_several_pods_then_one_after_retry() -> None:
    kube = cluster(plugin_pod("dp-a"), plugin_pod("dp-b"))
    deleted: list[str] = []
    clock = Clock()
    r = restarter(kube, clock, find_attempts=3)

    async def sleep(s: float) -> None:  # the rollout finishes while we wait
        await clock.sleep(s)
        if "dp-a" in pod_names(kube):
            kube.remove_pod("gpu-operator", "dp-a")
            kube.on_pod_deleted(daemonset(kube, deleted))

    r._sleep = sleep
    assert await r.restart()
    assert deleted == ["dp-b"]
    assert kube.calls.count("delete pods") == 1
    await kube.settle()
    assert pod_names(kube) == {"dp-bx"}


@pytest.mark.asyncio
async def test_custom_namespace_and_selector() -> None:
    kube = cluster(
        plugin_pod("dp-x", namespace="kube-system", labels={"app.kubernetes.io/name": "x"}),
        plugin_pod("dp-x-n2", node_name="n2", namespace="kube-system", labels={"app.kubernetes.io/name": "x"}),
        plugin_pod("dp-operator"),  # the default namespace and label: not this plugin
        plugin_pod("dp-y", namespace="kube-system", labels={"app.kubernetes.io/name": "y"}),
    )
    deleted: list[str] = []
    kube.on_pod_deleted(daemonset(kube, deleted))
    clock = Clock()
    assert await restarter(kube, clock, namespace="kube-system", label_selector="app.kubernetes.io/name=x").restart()
    assert deleted == ["dp-x"]
    assert pod_names(kube) == {"dp-xx", "dp-x-n2", "dp-operator", "dp-y"}
    assert kube.events == []


@pytest.mark.parametrize("published", [True, False])
async def test_restart_waits_for_allocatable_with_timeout_and_event(published: bool) -> None:
    kube = MemoryKube()
    body = node("n1")
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
