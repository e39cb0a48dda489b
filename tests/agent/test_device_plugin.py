from __future__ import annotations

import pytest

from nos.agent.device_plugin import DevicePluginConfig, DevicePluginRestarter
from tests.agent.agent_fakes import FakeKube, node, plugin_pod


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def restarter(kube: FakeKube, clock: Clock, **cfg: object) -> DevicePluginRestarter:
    config = DevicePluginConfig.model_validate({"timeout_s": 10, "poll_s": 1, **cfg})
    return DevicePluginRestarter(kube, "n1", config, clock, clock.sleep)


@pytest.mark.asyncio
async def test_deletes_this_nodes_pod_and_waits_for_a_new_running_one() -> None:
    kube = FakeKube([node()])
    kube.pods = [plugin_pod("dp-old"), plugin_pod("dp-other", node_name="n2")]
    clock = Clock()

    def daemonset(namespace: str, name: str) -> None:
        kube.pods.append(plugin_pod("dp-new", phase="Pending"))

    kube.on_delete = daemonset
    r = restarter(kube, clock)

    async def sleep(s: float) -> None:  # the new pod becomes Running after 3 polls
        await clock.sleep(s)
        if len(clock.sleeps) == 3:
            kube.pods[-1]["status"]["phase"] = "Running"

    r._sleep = sleep
    task_done = await r.restart()
    assert task_done
    assert kube.deleted == ["dp-old"]
    assert kube.list_calls[0] == ("gpu-operator", "app=nvidia-device-plugin-daemonset", "spec.nodeName=n1")
    assert len(clock.sleeps) == 3
    assert kube.events == []


@pytest.mark.asyncio
async def test_timeout_emits_a_warning_event_on_the_node() -> None:
    kube = FakeKube([node()])
    kube.pods = [plugin_pod("dp-old")]
    clock = Clock()
    assert not await restarter(kube, clock).restart()
    assert clock.now >= 10
    [event] = kube.events
    assert (event.type, event.reason, event.regarding.kind, event.regarding.name) == (
        "Warning",
        "DevicePluginRestartTimeout",
        "Node",
        "n1",
    )


@pytest.mark.asyncio
async def test_old_pod_still_running_is_not_taken_for_the_new_one() -> None:
    kube = FakeKube([node()])
    kube.pods = [plugin_pod("dp-old")]
    clock = Clock()

    async def no_delete(namespace: str, name: str) -> None:  # deletion not effective yet
        kube.deleted.append(name)

    kube.delete_pod = no_delete  # type: ignore[method-assign]
    assert not await restarter(kube, clock).restart()
    assert kube.events[0].reason == "DevicePluginRestartTimeout"


@pytest.mark.asyncio
async def test_zero_pods_retries_then_event() -> None:
    kube = FakeKube([node()])
    clock = Clock()
    assert not await restarter(kube, clock, find_attempts=3).restart()
    assert len(kube.list_calls) == 3 and len(clock.sleeps) == 2
    assert kube.deleted == []
    assert [e.reason for e in kube.events] == ["DevicePluginNotFound"]
    assert "found 0 (none)" in kube.events[0].note


@pytest.mark.asyncio
async def test_several_pods_then_one_after_retry() -> None:
    kube = FakeKube([node()])
    kube.pods = [plugin_pod("dp-a"), plugin_pod("dp-b")]
    clock = Clock()
    kube.on_delete = lambda ns, name: kube.pods.append(plugin_pod("dp-c"))
    r = restarter(kube, clock, find_attempts=3)

    async def sleep(s: float) -> None:  # the rollout finishes while we wait
        await clock.sleep(s)
        kube.pods = [p for p in kube.pods if p["metadata"]["name"] != "dp-a"]

    r._sleep = sleep
    assert await r.restart()
    assert kube.deleted == ["dp-b"]


@pytest.mark.asyncio
async def test_custom_namespace_and_selector() -> None:
    kube = FakeKube([node()])
    clock = Clock()
    await restarter(kube, clock, namespace="kube-system", label_selector="app.kubernetes.io/name=x").restart()
    assert kube.list_calls[0] == ("kube-system", "app.kubernetes.io/name=x", "spec.nodeName=n1")
