"""The reflector over both ``Kube`` adapters: lightkube over real HTTP (fake apiserver) and MemoryKube."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from nos.kube.client import LightkubeKube
from nos.kube.fake.memory import MemoryKube
from nos.kube.fake.store import ObjectStore
from nos.kube.port import Gone, Kube, KubeError, Obj
from nos.runtime.reflector import Reflector, object_key
from tests.kube.conftest import FAST_RETRY, lightkube_client, node, pod
from tests.kube.fake_apiserver import FakeApiServer
from tests.runtime.helpers import eventually


@dataclass
class Side:
    name: str
    kube: Kube
    store: ObjectStore
    server: FakeApiServer | None = None
    seen: list[tuple[str, str]] = field(default_factory=list)

    def drop_watches(self) -> None:
        self.store.close_watches()


@pytest_asyncio.fixture(params=["memory", "http"])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[Side]:
    if request.param == "memory":
        mem = MemoryKube()
        yield Side("memory", mem, mem.store)
        return
    server = FakeApiServer()
    await server.start()
    kube = LightkubeKube(lightkube_client(server), retry=FAST_RETRY)
    try:
        yield Side("http", kube, server.store, server)
    finally:
        await kube.close()
        await server.stop()


def start(side: Side, resource: str = "nodes", **kw: object) -> tuple[Reflector, asyncio.Task[None]]:
    def record(kind: str, obj: Obj) -> None:
        side.seen.append((kind, object_key(obj)))

    r = Reflector(side.kube, resource, on_change=record, watch_timeout_s=30, backoff_base_s=0.01, **kw)  # type: ignore[arg-type]
    return r, asyncio.create_task(r.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_initial_list_then_live_changes(side: Side) -> None:
    side.store.create("nodes", node("a"))
    side.store.create("nodes", node("b"))
    r, task = start(side)
    try:
        await asyncio.wait_for(r.synced.wait(), 5)
        assert sorted(r.cache) == ["a", "b"] and r.lists == 1
        assert side.seen == [("ADDED", "a"), ("ADDED", "b")]
        side.store.merge_patch("nodes", "a", {"metadata": {"annotations": {"k": "v"}}})
        side.store.delete("nodes", "b")
        side.store.create("nodes", node("c"))
        await eventually(lambda: sorted(r.cache) == ["a", "c"] and "k" in r.cache["a"]["metadata"]["annotations"])
        assert side.seen[2:] == [("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "c")]
        assert r.resource_version == side.store.resource_version
    finally:
        await stop(task)


async def test_dropped_stream_resumes_from_last_version_without_relist(side: Side) -> None:
    side.store.create("nodes", node("a"))
    r, task = start(side)
    try:
        await asyncio.wait_for(r.synced.wait(), 5)
        side.store.merge_patch("nodes", "a", {"metadata": {"annotations": {"n": "1"}}})
        await eventually(lambda: r.resource_version == side.store.resource_version)
        last = r.resource_version
        side.drop_watches()
        side.store.merge_patch("nodes", "a", {"metadata": {"annotations": {"n": "2"}}})  # while no watch is open
        await eventually(lambda: r.cache["a"]["metadata"]["annotations"].get("n") == "2")
        assert r.lists == 1  # resumed, not re-listed
        if side.server is not None:  # lightkube re-watched from the last version it saw
            rvs = [q.query.get("resourceVersion") for q in side.server.requests if q.query.get("watch")]
            assert last in rvs[1:]
        else:
            assert r.watches >= 2
    finally:
        await stop(task)


async def test_expired_version_relists_and_emits_synthetic_deletes(side: Side) -> None:
    for name in ("a", "b", "c"):
        side.store.create("nodes", node(name))
    r, task = start(side)
    await asyncio.wait_for(r.synced.wait(), 5)
    await stop(task)  # away for a while: changes happen, history is compacted
    side.store.delete("nodes", "b")
    side.store.merge_patch("nodes", "c", {"metadata": {"annotations": {"x": "y"}}})
    side.store.create("nodes", node("d"))
    side.store.compact()
    side.seen.clear()
    task = asyncio.create_task(r.run())
    try:
        await eventually(lambda: r.lists == 2 and sorted(r.cache) == ["a", "c", "d"])
        assert sorted(side.seen) == [("ADDED", "d"), ("DELETED", "b"), ("MODIFIED", "c")]
        side.store.create("nodes", node("e"))  # and the new watch works
        await eventually(lambda: "e" in r.cache)
    finally:
        await stop(task)


async def test_selector_transitions_enter_as_added_and_leave_as_deleted(side: Side) -> None:
    side.store.create("nodes", node("a", labels={"gpu": "yes"}))
    side.store.create("nodes", node("b"))
    r, task = start(side, label_selector="gpu=yes")
    try:
        await asyncio.wait_for(r.synced.wait(), 5)
        assert list(r.cache) == ["a"]
        side.store.merge_patch("nodes", "b", {"metadata": {"labels": {"gpu": "yes"}}})
        await eventually(lambda: "b" in r.cache)
        side.store.merge_patch("nodes", "a", {"metadata": {"labels": {"gpu": None}}})
        await eventually(lambda: "a" not in r.cache)
        assert side.seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    finally:
        await stop(task)


async def test_field_selector_watches_one_node_and_namespaced_pods(side: Side) -> None:
    side.store.create("nodes", node("mine"))
    side.store.create("nodes", node("other"))
    side.store.create("pods", pod("p1", namespace="ml"), "ml")
    mine, t1 = start(side, field_selector="metadata.name=mine")
    pods, t2 = start(side, "pods")
    try:
        await asyncio.wait_for(asyncio.gather(mine.synced.wait(), pods.synced.wait()), 5)
        side.store.merge_patch("nodes", "other", {"metadata": {"annotations": {"a": "b"}}})
        side.store.merge_patch("nodes", "mine", {"metadata": {"annotations": {"a": "c"}}})
        side.store.create("pods", pod("p2", namespace="web"), "web")
        await eventually(lambda: mine.cache["mine"]["metadata"]["annotations"].get("a") == "c")
        await eventually(lambda: sorted(pods.cache) == ["ml/p1", "web/p2"])
        assert list(mine.cache) == ["mine"]
    finally:
        await stop(t1)
        await stop(t2)


async def test_list_errors_are_retried_with_backoff() -> None:
    kube = MemoryKube()
    kube.add_node(node("a"))
    kube.fail_next("list_with_version", KubeError("boom", 500), times=2)
    r = Reflector(kube, "nodes", backoff_base_s=0.01)
    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(r.synced.wait(), 5)
        assert kube.calls.count("list_with_version nodes") == 3 and list(r.cache) == ["a"]
    finally:
        await stop(task)


async def test_http_watch_from_compacted_version_raises_gone(server: FakeApiServer, http: LightkubeKube) -> None:
    server.store.create("nodes", node("a"))
    server.store.merge_patch("nodes", "a", {"metadata": {"annotations": {"k": "v"}}})
    server.store.compact()
    with pytest.raises(Gone):
        async for _ in http.watch("nodes", resource_version="1", timeout_s=5):
            pass
    items, rv = await http.list_with_version("nodes")
    assert [o["metadata"]["name"] for o in items] == ["a"] and rv == server.store.resource_version
