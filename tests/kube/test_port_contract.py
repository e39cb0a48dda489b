"""One behaviour suite run against both ``Kube`` implementations (``backend`` fixture).

The HTTP run drives lightkube against the fake apiserver; the memory run drives ``MemoryKube``.
Passing both keeps the in-memory fake honest about what the real client observes.
"""

from __future__ import annotations

import pytest

from nos.kube.port import Conflict, Event, NotFound, ObjectRef, annotations_patch
from tests.kube.conftest import Backend, node, pod
from tests.kube.selector_cases import LABEL_SELECTOR_CASES, NODE_LABELS


def _names(objs: list[dict[str, object]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)  # type: ignore[index]


async def test_get_node_returns_api_shaped_dict(backend: Backend) -> None:
    backend.store.create("nodes", node("n1", labels={"gpu": "a100"}, annotations={"a": "1"}))
    got = await backend.kube.get("nodes", "n1")
    assert got["metadata"]["name"] == "n1"
    assert got["metadata"]["labels"] == {"gpu": "a100"}
    assert got["metadata"]["annotations"] == {"a": "1"}
    assert got["metadata"]["resourceVersion"]
    assert got["status"]["allocatable"]["nvidia.com/gpu"] == "1"


async def test_get_missing_node_raises_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound) as exc:
        await backend.kube.get("nodes", "nope")
    assert exc.value.status == 404


@pytest.mark.parametrize(
    ("selector", "expected"),
    LABEL_SELECTOR_CASES,
)
async def test_list_nodes_label_selectors(backend: Backend, selector: str | None, expected: list[str]) -> None:
    for name, labels in NODE_LABELS.items():
        backend.store.create("nodes", node(name, labels=labels))
    assert _names(await backend.kube.list("nodes", label_selector=selector)) == expected


async def test_list_pods_field_selectors(backend: Backend) -> None:
    backend.store.create("pods", pod("p1", node_name="n1"), "default")
    backend.store.create("pods", pod("p2", node_name="n2"), "default")
    backend.store.create("pods", pod("p3", namespace="gpu", node_name="n1", phase="Succeeded"), "gpu")
    backend.store.create("pods", pod("pending", phase="Pending"), "default")
    kube = backend.kube
    assert _names(await kube.list("pods", field_selector="spec.nodeName=n1")) == ["p1", "p3"]
    assert _names(await kube.list("pods", field_selector="spec.nodeName=")) == ["pending"]
    assert _names(await kube.list("pods", field_selector="spec.nodeName=n1,status.phase!=Succeeded")) == ["p1"]
    assert _names(await kube.list("pods", field_selector="metadata.name=p2")) == ["p2"]
    assert _names(await kube.list("pods", namespace="gpu")) == ["p3"]
    assert _names(await kube.list("pods", field_selector="metadata.namespace=gpu")) == ["p3"]
    assert _names(await kube.list("pods")) == ["p1", "p2", "p3", "pending"]


async def test_list_pods_label_and_field_selector_combined(backend: Backend) -> None:
    plugin = {"app": "nvidia-device-plugin-daemonset"}
    backend.store.create("pods", pod("dp-n1", namespace="nvidia", node_name="n1", labels=plugin), "nvidia")
    backend.store.create("pods", pod("dp-n2", namespace="nvidia", node_name="n2", labels=plugin), "nvidia")
    backend.store.create("pods", pod("other", namespace="nvidia", node_name="n1"), "nvidia")
    got = await backend.kube.list(
        "pods",
        namespace="nvidia",
        label_selector="app=nvidia-device-plugin-daemonset",
        field_selector="spec.nodeName=n1",
    )
    assert _names(got) == ["dp-n1"]


async def test_merge_patch_adds_changes_and_deletes_annotations(backend: Backend) -> None:
    created = backend.store.create("nodes", node("n1", annotations={"keep": "k", "change": "old", "drop": "x"}))
    patched = await backend.kube.patch("nodes", "n1", annotations_patch({"change": "new", "drop": None, "add": "a"}))
    assert patched["metadata"]["annotations"] == {"keep": "k", "change": "new", "add": "a"}
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert (await backend.kube.get("nodes", "n1"))["metadata"]["annotations"] == patched["metadata"]["annotations"]
    # labels and status are untouched by an annotation patch
    assert patched["status"]["allocatable"]["cpu"] == "8"


async def test_patch_with_current_resource_version_succeeds(backend: Backend) -> None:
    created = backend.store.create("nodes", node("n1"))
    rv = created["metadata"]["resourceVersion"]
    patched = await backend.kube.patch("nodes", "n1", annotations_patch({"k": "v"}, rv))
    assert patched["metadata"]["annotations"] == {"k": "v"}


async def test_patch_with_stale_resource_version_raises_conflict(backend: Backend) -> None:
    created = backend.store.create("nodes", node("n1"))
    stale = created["metadata"]["resourceVersion"]
    await backend.kube.patch("nodes", "n1", annotations_patch({"first": "1"}))
    with pytest.raises(Conflict) as exc:
        await backend.kube.patch("nodes", "n1", annotations_patch({"second": "2"}, stale))
    assert exc.value.status == 409
    assert "second" not in (await backend.kube.get("nodes", "n1"))["metadata"]["annotations"]


async def test_patch_missing_node_raises_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await backend.kube.patch("nodes", "ghost", annotations_patch({"k": "v"}))


async def test_delete_pod_then_get_is_404(backend: Backend) -> None:
    backend.store.create("pods", pod("dp", namespace="nvidia", node_name="n1"), "nvidia")
    await backend.kube.delete("pods", "dp", "nvidia")
    assert await backend.kube.list("pods", namespace="nvidia") == []
    with pytest.raises(NotFound):
        backend.store.get("pods", "dp", "nvidia")
    with pytest.raises(NotFound):
        await backend.kube.delete("pods", "dp", "nvidia")


async def test_create_event_stores_events_k8s_io_v1_object(backend: Backend) -> None:
    ref = ObjectRef(kind="Node", name="n1", uid="u-1")
    await backend.kube.create_event(Event(ref, reason="MigPartitioned", note="applied 2x1g.10gb", type="Normal"))
    await backend.kube.create_event(Event(ref, reason="MigFailed", note="x" * 5000, type="Warning", action="Apply"))
    events, _ = backend.store.list("events", "default")
    assert len(events) == 2
    by_reason = {e["reason"]: e for e in events}
    ok = by_reason["MigPartitioned"]
    assert ok["apiVersion"] == "events.k8s.io/v1"
    assert ok["reportingController"] == "nos.nebuly.com/agent"
    assert ok["reportingInstance"] == "agent-test"
    assert ok["action"] == "Partitioning"
    assert ok["type"] == "Normal"
    assert ok["note"] == "applied 2x1g.10gb"
    assert ok["regarding"] == {"kind": "Node", "name": "n1", "uid": "u-1", "apiVersion": "v1"}
    assert ok["eventTime"].endswith("Z") and len(ok["eventTime"].split(".")[1]) == 7  # six digits + Z
    failed = by_reason["MigFailed"]
    assert failed["type"] == "Warning" and failed["action"] == "Apply"
    assert len(failed["note"].encode()) == 1024


async def test_event_about_namespaced_pod_lands_in_its_namespace(backend: Backend) -> None:
    ref = ObjectRef(kind="Pod", name="p1", namespace="team-a")
    await backend.kube.create_event(Event(ref, reason="Waiting", note="n"))
    events, _ = backend.store.list("events", "team-a")
    assert [e["regarding"]["namespace"] for e in events] == ["team-a"]


def _lease(name: str, holder: str) -> dict[str, object]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "nos-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


async def test_generic_verbs_on_a_lease(backend: Backend) -> None:
    """create, get, replace (resourceVersion precondition), patch, delete: one set of verbs for every kind."""
    created = await backend.kube.create("leases", _lease("nos", "a"))
    assert created["metadata"]["namespace"] == "nos-system" and created["spec"]["holderIdentity"] == "a"
    with pytest.raises(Conflict):
        await backend.kube.create("leases", _lease("nos", "b"))
    got = await backend.kube.get("leases", "nos", "nos-system")
    got["spec"]["holderIdentity"] = "b"
    replaced = await backend.kube.replace("leases", got)
    assert replaced["spec"]["holderIdentity"] == "b"
    with pytest.raises(Conflict):
        await backend.kube.replace("leases", got)  # its resourceVersion is stale now
    stale = {"metadata": {"resourceVersion": got["metadata"]["resourceVersion"]}, "spec": {"holderIdentity": "c"}}
    with pytest.raises(Conflict):
        await backend.kube.patch("leases", "nos", stale, "nos-system")
    patched = await backend.kube.patch("leases", "nos", {"spec": {"holderIdentity": None}}, "nos-system")
    assert "holderIdentity" not in patched["spec"]
    assert [o["metadata"]["name"] for o in await backend.kube.list("leases", "nos-system")] == ["nos"]
    await backend.kube.delete("leases", "nos", "nos-system")
    with pytest.raises(NotFound):
        await backend.kube.get("leases", "nos", "nos-system")


async def test_list_is_list_with_version_without_the_version(backend: Backend) -> None:
    backend.store.create("nodes", node("n1", labels={"gpu": "a100"}))
    backend.store.create("nodes", node("n2"))
    items, version = await backend.kube.list_with_version("nodes", label_selector="gpu")
    assert _names(items) == ["n1"] and version == backend.store.resource_version
    assert await backend.kube.list("nodes", label_selector="gpu") == items


def test_annotations_patch_carries_the_precondition() -> None:
    assert annotations_patch({"a": "1", "b": None}) == {"metadata": {"annotations": {"a": "1", "b": None}}}
    assert annotations_patch({"a": "1"}, "42") == {"metadata": {"annotations": {"a": "1"}, "resourceVersion": "42"}}
