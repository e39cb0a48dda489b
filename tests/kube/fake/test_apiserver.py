"""The fake apiserver's own semantics, driven by lightkube (and raw HTTP where lightkube hides it).

These pin what later controller tests rely on: create/AlreadyExists, PUT with resourceVersion,
status subresource, Leases, Event validation, patch content types, and watch (replay from a
resourceVersion, selector transitions, timeoutSeconds, 410 Expired, dropped streams).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

import httpx2
import pytest
import pytest_asyncio
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.core.dictmixin import DictMixin
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType

from tests.kube.conftest import lightkube_client, node, pod
from tests.kube.fake_apiserver import FakeApiServer

M = TypeVar("M", bound=DictMixin)


def model(cls: type[M], data: dict[str, Any]) -> M:
    """``from_dict`` typed as the class it is called on (lightkube annotates it as DictMixin)."""
    return cast(M, cls.from_dict(data))


@pytest_asyncio.fixture
async def client(fake_server: FakeApiServer) -> AsyncIterator[AsyncClient]:
    c = lightkube_client(fake_server)
    try:
        yield c
    finally:
        await c.close()


def raw(server: FakeApiServer) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"})


async def test_create_then_create_again_is_already_exists(client: AsyncClient) -> None:
    created = await client.create(model(Node, node("n1")))
    assert created.metadata is not None and created.metadata.uid and created.metadata.resourceVersion
    with pytest.raises(ApiError) as exc:
        await client.create(model(Node, node("n1")))
    assert exc.value.status.code == 409 and exc.value.status.reason == "AlreadyExists"


async def test_resource_version_is_global_and_list_reports_it(client: AsyncClient) -> None:
    a = await client.create(model(Node, node("a")))
    b = await client.create(model(Pod, pod("p")))
    assert a.metadata and b.metadata
    assert int(b.metadata.resourceVersion or 0) == int(a.metadata.resourceVersion or 0) + 1
    listing = client.list(Node)
    names = [n.metadata.name async for n in listing if n.metadata]
    assert names == ["a"]
    assert listing.resourceVersion == b.metadata.resourceVersion


async def test_generate_name(client: AsyncClient) -> None:
    body = pod("x")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "dp-"
    created = await client.create(model(Pod, body))
    assert created.metadata and created.metadata.name and created.metadata.name.startswith("dp-")
    assert len(created.metadata.name) == len("dp-") + 5


async def test_put_with_stale_resource_version_conflicts(client: AsyncClient) -> None:
    lease = await client.create(
        model(Lease, {"metadata": {"name": "nos-leader", "namespace": "nos"}, "spec": {"holderIdentity": "a"}})
    )
    assert lease.spec is not None
    lease.spec.holderIdentity = "b"
    renewed = await client.replace(lease)
    assert renewed.spec and renewed.spec.holderIdentity == "b"
    lease.spec.holderIdentity = "c"  # still carries the old resourceVersion
    with pytest.raises(ApiError) as exc:
        await client.replace(lease)
    assert exc.value.status.code == 409
    current = await client.get(Lease, "nos-leader", namespace="nos")
    assert current.spec and current.spec.holderIdentity == "b"


async def test_status_subresource_only_changes_status(client: AsyncClient) -> None:
    await client.create(model(Pod, pod("p", phase="Pending")))
    main = {"metadata": {"labels": {"x": "1"}}, "status": {"phase": "Running"}}
    after_main = await client.patch(Pod, "p", main, namespace="default", patch_type=PatchType.MERGE)
    assert after_main.metadata and after_main.metadata.labels == {"x": "1"}
    assert after_main.status and after_main.status.phase == "Pending"  # ignored on the main resource
    status = {"metadata": {"labels": {"y": "2"}}, "status": {"phase": "Running"}}
    after_status = await client.patch(Pod.Status, "p", status, namespace="default", patch_type=PatchType.MERGE)
    assert after_status.status and after_status.status.phase == "Running"
    assert after_status.metadata and after_status.metadata.labels == {"x": "1"}  # ignored on /status


async def test_strategic_merge_of_maps_works_and_lists_are_refused(client: AsyncClient) -> None:
    await client.create(model(Node, node("n1", annotations={"a": "1"})))
    patched = await client.patch(Node, "n1", {"metadata": {"annotations": {"b": "2"}}})
    assert patched.metadata and patched.metadata.annotations == {"a": "1", "b": "2"}
    with pytest.raises(ApiError) as exc:
        await client.patch(Node, "n1", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})
    assert exc.value.status.code == 415


async def test_json_patch_with_test_op(client: AsyncClient) -> None:
    await client.create(model(Node, node("n1", annotations={"a": "1"})))
    ops = [
        {"op": "test", "path": "/metadata/annotations/a", "value": "1"},
        {"op": "add", "path": "/metadata/annotations/nos.nebuly.com~1spec", "value": "x"},
    ]
    patched = await client.patch(Node, "n1", ops, patch_type=PatchType.JSON)
    assert patched.metadata and patched.metadata.annotations == {"a": "1", "nos.nebuly.com/spec": "x"}
    with pytest.raises(ApiError) as exc:
        await client.patch(
            Node,
            "n1",
            [{"op": "test", "path": "/metadata/annotations/a", "value": "2"}],
            patch_type=PatchType.JSON,
        )
    assert exc.value.status.code == 422


async def test_event_validation_and_missing_token(fake_server: FakeApiServer) -> None:
    async with raw(fake_server) as http:
        resp = await http.post(
            "/apis/events.k8s.io/v1/namespaces/default/events",
            json={"metadata": {"name": "e1"}, "reason": "R", "eventTime": "2026-01-01T00:00:00Z"},
        )
        assert resp.status_code == 422
        body = resp.json()
        assert body["kind"] == "Status" and body["reason"] == "Invalid"
        for missing in (
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "type",
            "regarding",
        ):
            assert missing in body["message"]
        assert (await http.get("/api/v1/nodes", headers={"Authorization": ""})).status_code == 401
        assert (await http.get("/api/v1/widgets")).status_code == 404


async def test_delete_absent_is_404_and_delete_hook_runs(fake_server: FakeApiServer, client: AsyncClient) -> None:
    seen: list[str] = []
    fake_server.store.on_delete("pods", lambda p: seen.append(p["metadata"]["name"]))
    await client.create(model(Pod, pod("p")))
    await client.delete(Pod, "p", namespace="default")
    assert seen == ["p"]
    with pytest.raises(ApiError) as exc:
        await client.delete(Pod, "p", namespace="default")
    assert exc.value.status.code == 404


async def test_delay_fault(fake_server: FakeApiServer, client: AsyncClient) -> None:
    fake_server.delay_next(r"/api/v1/nodes$", 0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    _ = [n async for n in client.list(Node)]
    assert loop.time() - start >= 0.3


# -- watch -----------------------------------------------------------------------------------------


async def _collect(stream: AsyncIterator[tuple[str, Any]], n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    async for kind, obj in stream:
        out.append((kind, obj.metadata.name))
        if len(out) == n:
            break
    return out


async def test_watch_from_list_resource_version_sees_later_changes(client: AsyncClient) -> None:
    await client.create(model(Node, node("old")))
    listing = client.list(Node)
    _ = [n async for n in listing]
    rv = listing.resourceVersion
    await client.create(model(Node, node("n1")))
    await client.patch(Node, "n1", {"metadata": {"annotations": {"k": "v"}}}, patch_type=PatchType.MERGE)
    await client.delete(Node, "n1")
    events = await _collect(client.watch(Node, resource_version=rv, server_timeout=5).__aiter__(), 3)
    assert events == [("ADDED", "n1"), ("MODIFIED", "n1"), ("DELETED", "n1")]


async def test_watch_live_events_with_selector_transitions(client: AsyncClient) -> None:
    await client.create(model(Pod, pod("p", labels={"app": "x"})))
    got: list[tuple[str, str]] = []

    async def watch() -> None:
        stream = client.watch(Pod, namespace=ALL_NS, labels={"app": "gpu"}, server_timeout=5)
        got.extend(await _collect(stream.__aiter__(), 2))

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await client.patch(
        Pod, "p", {"metadata": {"labels": {"app": "gpu"}}}, namespace="default", patch_type=PatchType.MERGE
    )
    await client.patch(
        Pod, "p", {"metadata": {"labels": {"app": "cpu"}}}, namespace="default", patch_type=PatchType.MERGE
    )
    await asyncio.wait_for(task, 5)
    assert got == [("ADDED", "p"), ("DELETED", "p")]  # entering → ADDED, leaving → DELETED


async def test_watch_too_old_resource_version_gets_in_stream_410(
    fake_server: FakeApiServer, client: AsyncClient
) -> None:
    await client.create(model(Node, node("a")))  # rv 1
    await client.create(model(Node, node("b")))  # rv 2
    fake_server.store.compact()  # history before rv 2 is gone: a watch from rv 1 cannot be served
    with pytest.raises(ApiError) as exc:
        async for _ in client.watch(Node, resource_version="1", server_timeout=5):
            pass
    assert exc.value.status.code == 410


async def test_watch_timeout_seconds_ends_the_stream(fake_server: FakeApiServer) -> None:
    async with raw(fake_server) as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        resp = await http.get("/api/v1/nodes", params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": "0"})
        assert resp.status_code == 200 and resp.text == ""
        assert 0.9 <= loop.time() - start < 3


async def test_dropped_watch_ends_stream_and_watch_without_rv_lists_first(fake_server: FakeApiServer) -> None:
    fake_server.store.create("nodes", node("n1"))
    async with raw(fake_server) as http:

        async def read() -> list[Any]:
            async with http.stream("GET", "/api/v1/nodes", params={"watch": "1", "timeoutSeconds": "30"}) as resp:
                return [json.loads(line) async for line in resp.aiter_lines() if line]

        task = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        fake_server.drop_watches()
        lines = await asyncio.wait_for(task, 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "n1")]
