"""MemoryKube's test/simulator helpers (port behaviour itself is in tests/kube/test_port_contract.py)."""

from __future__ import annotations

import asyncio

import pytest

from nos.kube.fake.memory import MemoryKube, recreate_after
from nos.kube.fake.store import Gone, Invalid
from nos.kube.port import Event, Kube, KubeError, NotFound, ObjectRef, annotations_patch
from tests.kube.conftest import node, pod


def test_memory_kube_satisfies_the_port() -> None:
    kube: Kube = MemoryKube()  # mypy checks the structural match; this checks it at runtime too
    for method in ("get", "list", "list_with_version", "create", "replace", "patch", "delete", "create_event"):
        assert asyncio.iscoroutinefunction(getattr(kube, method))


async def test_every_write_bumps_the_resource_version() -> None:
    kube = MemoryKube()
    rvs = [int(kube.add_node(node("n1"))["metadata"]["resourceVersion"])]
    for i in range(3):
        rvs.append(
            int((await kube.patch("nodes", "n1", annotations_patch({"i": str(i)})))["metadata"]["resourceVersion"])
        )
    kube.add_pod(pod("p"))
    assert rvs == sorted(set(rvs))
    assert kube.store.resource_version == str(rvs[-1] + 1)


async def test_returned_objects_are_copies() -> None:
    kube = MemoryKube()
    kube.add_node(node("n1", annotations={"a": "1"}))
    got = await kube.get("nodes", "n1")
    got["metadata"]["annotations"]["a"] = "mutated"
    assert (await kube.get("nodes", "n1"))["metadata"]["annotations"] == {"a": "1"}


async def test_update_node_and_pod_replace_status_too() -> None:
    kube = MemoryKube()
    n = kube.add_node(node("n1"))
    n["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = "2"
    n["metadata"]["labels"]["x"] = "y"
    kube.update_node(n)
    got = await kube.get("nodes", "n1")
    assert got["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] == "2"
    assert got["metadata"]["labels"] == {"x": "y"}
    p = kube.add_pod(pod("p", phase="Pending"))
    p["spec"]["nodeName"] = "n1"
    p["status"]["phase"] = "Running"
    kube.update_pod(p)
    assert [x["metadata"]["name"] for x in await kube.list("pods", field_selector="status.phase=Running")] == ["p"]
    kube.remove_pod("default", "p")
    kube.remove_node("n1")
    assert await kube.list("nodes") == [] and await kube.list("pods") == []


async def test_daemonset_like_hook_recreates_deleted_device_plugin_pod() -> None:
    kube = MemoryKube()
    kube.add_pod(pod("dp-n1-aaaaa", namespace="nvidia", node_name="n1", labels={"app": "dp"}))
    kube.on_pod_deleted(recreate_after(kube, 0.05, rename=lambda name: name[:-5] + "bbbbb"))
    await kube.delete("pods", "dp-n1-aaaaa", "nvidia")
    assert await kube.list("pods", namespace="nvidia") == []
    await kube.settle()
    (fresh,) = await kube.list("pods", namespace="nvidia", label_selector="app=dp", field_selector="spec.nodeName=n1")
    assert fresh["metadata"]["name"] == "dp-n1-bbbbb"
    assert "status" not in fresh


async def test_sync_pod_hook_sees_the_deleted_pod() -> None:
    kube = MemoryKube()
    seen: list[str] = []
    kube.on_pod_deleted(lambda p: seen.append(p["spec"]["nodeName"]))
    kube.add_pod(pod("p", node_name="n7"))
    await kube.delete("pods", "p", "default")
    assert seen == ["n7"]


async def test_fail_next_injects_errors_then_recovers() -> None:
    kube = MemoryKube()
    kube.add_node(node("n1"))
    kube.fail_next("patch nodes", KubeError("boom", 503), times=2)
    for _ in range(2):
        with pytest.raises(KubeError) as exc:
            await kube.patch("nodes", "n1", annotations_patch({"k": "v"}))
        assert exc.value.status == 503
    await kube.patch("nodes", "n1", annotations_patch({"k": "v"}))
    assert kube.calls.count("patch nodes") == 3
    assert (await kube.get("nodes", "n1"))["metadata"]["annotations"] == {"k": "v"}


async def test_events_are_recorded_for_assertions() -> None:
    kube = MemoryKube(component="partitioner", instance="p-0")
    ev = Event(ObjectRef("Node", "n1"), reason="Planned", note="n")
    await kube.create_event(ev)
    assert kube.events == [ev]
    (stored,) = kube.store.list("events")[0]
    assert stored["reportingController"] == "nos.nebuly.com/partitioner"
    with pytest.raises(Invalid):
        await kube.create_event(Event(ObjectRef("Node", ""), reason="R", note="n"))
    assert kube.events == [ev]


async def test_missing_objects_are_not_found() -> None:
    kube = MemoryKube()
    with pytest.raises(NotFound):
        await kube.delete("pods", "ghost", "default")
    with pytest.raises(NotFound):
        await kube.patch("nodes", "ghost", annotations_patch({"a": None}))


async def test_watch_replays_from_resource_version_and_expires() -> None:
    kube = MemoryKube()
    rv = kube.add_node(node("n1"))["metadata"]["resourceVersion"]
    await kube.patch("nodes", "n1", annotations_patch({"k": "v"}))
    kube.add_node(node("n2", labels={"gpu": "x"}))
    w = kube.watch("nodes", label_selector="!gpu", resource_version=rv)
    kind, obj = await asyncio.wait_for(anext(w), 1)
    assert (kind, obj["metadata"]["annotations"]) == ("MODIFIED", {"k": "v"})
    await kube.patch("nodes", "n1", annotations_patch({"k": "w"}))
    kind, obj = await asyncio.wait_for(anext(w), 1)
    assert (kind, obj["metadata"]["annotations"]) == ("MODIFIED", {"k": "w"})
    w.close()
    with pytest.raises(StopAsyncIteration):
        await anext(w)
    kube.store.compact()
    await kube.patch("nodes", "n1", annotations_patch({"k": "z"}))
    with pytest.raises(Gone):
        kube.watch("nodes", resource_version=rv)


async def test_history_limit_compacts_old_versions() -> None:
    kube = MemoryKube()
    kube.store = type(kube.store)(history_limit=2)
    first = kube.add_node(node("n1"))["metadata"]["resourceVersion"]
    for i in range(3):
        await kube.patch("nodes", "n1", annotations_patch({"i": str(i)}))
    with pytest.raises(Gone):
        kube.watch("nodes", resource_version=first)
    assert kube.watch("nodes", resource_version="2") is not None


async def test_injected_failures_by_verb_and_resource() -> None:
    """``fail_next("get nodes")`` fails only node gets; a bare verb (``"get"``) fails the next get of any kind."""
    kube = MemoryKube()
    kube.add_node(node("n1"))
    kube.fail_next("get nodes", KubeError("nodes down", 503))
    with pytest.raises(NotFound):
        await kube.get("leases", "nos", "nos-system")  # not injected: the real 404
    with pytest.raises(KubeError, match="nodes down"):
        await kube.get("nodes", "n1")
    kube.fail_next("get", KubeError("anything", 500))
    with pytest.raises(KubeError, match="anything"):
        await kube.get("leases", "nos", "nos-system")
    assert (await kube.get("nodes", "n1"))["metadata"]["name"] == "n1"
    assert kube.calls == ["get leases", "get nodes", "get leases", "get nodes"]
