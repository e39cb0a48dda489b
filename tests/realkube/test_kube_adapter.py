"""``nos.kube.client.LightkubeKube`` against the REAL kube-apiserver.

Mirrors the essential cases of tests/kube/test_port_contract.py (run there against ``MemoryKube`` and the
fake API server) so the real server keeps both fakes honest. Fault-injection cases (429/5xx retries)
stay fake-only. Differences of the real server that the fakes do not model are pinned here too
(graceful deletion of bound pods, namespace admission, status reset on create).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.resources.events_v1 import Event as EventResource
from lightkube.types import PatchType

from nos.kube.client import LightkubeKube, RetryPolicy, from_kubeconfig
from nos.kube.port import Conflict, Event, KubeError, NotFound, Obj, ObjectRef, annotations_patch
from tests.kube.selector_cases import LABEL_SELECTOR_CASES, NODE_LABELS
from tests.realkube.control_plane import ControlPlane

# Real errors must surface at once, not after retries: a few quick attempts only.
QUICK_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)


@pytest_asyncio.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[LightkubeKube]:
    adapter = LightkubeKube(control_plane.client(), component="agent", instance="agent-test", retry=QUICK_RETRY)
    try:
        yield adapter
    finally:
        await adapter.close()


def _names(objs: list[Obj]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


async def seed_node(
    client: AsyncClient,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        # A Node keeps .status on create (the kubelet registers itself that way).
        "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": "1"}, "capacity": {"cpu": "8", "nvidia.com/gpu": "1"}},
    }
    created = await client.create(cast(Node, Node.from_dict(body)))
    return created.to_dict()


async def seed_pod(
    client: AsyncClient,
    name: str,
    namespace: str,
    node_name: str | None = None,
    labels: dict[str, str] | None = None,
    phase: str | None = None,
) -> None:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox"}]}
    if node_name:
        spec["nodeName"] = node_name
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
    }
    await client.create(cast(Pod, Pod.from_dict({**body, "spec": spec})))
    if phase:  # the server resets .status on create; a kubelet would report the phase like this
        await client.patch(
            Pod.Status, name, {"status": {"phase": phase}}, namespace=namespace, patch_type=PatchType.MERGE
        )


async def seed_namespace(client: AsyncClient, name: str) -> str:
    await client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


# -- nodes -----------------------------------------------------------------------------------------
async def test_get_node_returns_api_shaped_dict(kube: LightkubeKube, kube_client: AsyncClient, unique: str) -> None:
    await seed_node(kube_client, f"{unique}-n1", labels={"gpu": "a100"}, annotations={"a": "1"})
    got = await kube.get("nodes", f"{unique}-n1")
    assert got["metadata"]["name"] == f"{unique}-n1"
    assert got["metadata"]["labels"] == {"gpu": "a100"}
    assert got["metadata"]["annotations"] == {"a": "1"}
    assert got["metadata"]["resourceVersion"]
    assert got["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert got["apiVersion"] == "v1" and got["kind"] == "Node"


async def test_get_missing_node_raises_not_found(kube: LightkubeKube, unique: str) -> None:
    with pytest.raises(NotFound) as exc:
        await kube.get("nodes", f"{unique}-nope")
    assert exc.value.status == 404


@pytest.mark.parametrize(
    ("selector", "expected"),
    LABEL_SELECTOR_CASES,
)
async def test_list_nodes_label_selectors(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str, selector: str | None, expected: list[str]
) -> None:
    scope = {"nos-test": unique}  # other tests' nodes live in the same server
    for name, labels in NODE_LABELS.items():
        await seed_node(kube_client, f"{unique}-{name}", labels={**scope, **labels})
    full = f"nos-test={unique}" + (f",{selector}" if selector else "")
    got = await kube.list("nodes", label_selector=full)
    assert _names(got) == [f"{unique}-{n}" for n in expected]


async def test_merge_patch_adds_changes_and_deletes_annotations(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    name = f"{unique}-n1"
    created = await seed_node(kube_client, name, annotations={"keep": "k", "change": "old", "drop": "x"})
    patched = await kube.patch("nodes", name, annotations_patch({"change": "new", "drop": None, "add": "a"}))
    assert patched["metadata"]["annotations"] == {"keep": "k", "change": "new", "add": "a"}
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert (await kube.get("nodes", name))["metadata"]["annotations"] == patched["metadata"]["annotations"]
    assert patched["status"]["allocatable"]["cpu"] == "8"  # status untouched


async def test_patch_with_current_resource_version_succeeds(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    created = await seed_node(kube_client, f"{unique}-n1")
    rv = created["metadata"]["resourceVersion"]
    patched = await kube.patch("nodes", f"{unique}-n1", annotations_patch({"k": "v"}, rv))
    assert patched["metadata"]["annotations"] == {"k": "v"}


async def test_patch_with_stale_resource_version_raises_conflict(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    name = f"{unique}-n1"
    created = await seed_node(kube_client, name)
    stale = created["metadata"]["resourceVersion"]
    await kube.patch("nodes", name, annotations_patch({"first": "1"}))
    with pytest.raises(Conflict) as exc:
        await kube.patch("nodes", name, annotations_patch({"second": "2"}, stale))
    assert exc.value.status == 409
    assert "second" not in (await kube.get("nodes", name))["metadata"]["annotations"]


async def test_patch_missing_node_raises_not_found(kube: LightkubeKube, unique: str) -> None:
    with pytest.raises(NotFound):
        await kube.patch("nodes", f"{unique}-ghost", annotations_patch({"k": "v"}))


# -- pods ------------------------------------------------------------------------------------------
async def test_list_pods_field_selectors(kube: LightkubeKube, kube_client: AsyncClient, unique: str) -> None:
    ns, gpu_ns = await seed_namespace(kube_client, unique), await seed_namespace(kube_client, f"{unique}-gpu")
    n1, n2 = f"{unique}-n1", f"{unique}-n2"
    await seed_pod(kube_client, "p1", ns, node_name=n1)
    await seed_pod(kube_client, "p2", ns, node_name=n2)
    await seed_pod(kube_client, "p3", gpu_ns, node_name=n1, phase="Succeeded")
    await seed_pod(kube_client, "pending", ns)
    # All namespaces, narrowed to this test's nodes/namespaces by the field selectors themselves.
    assert _names(await kube.list("pods", field_selector=f"spec.nodeName={n1}")) == ["p1", "p3"]
    assert _names(await kube.list("pods", namespace=ns, field_selector="spec.nodeName=")) == ["pending"]
    assert _names(await kube.list("pods", field_selector=f"spec.nodeName={n1},status.phase!=Succeeded")) == ["p1"]
    assert _names(await kube.list("pods", namespace=ns, field_selector="metadata.name=p2")) == ["p2"]
    assert _names(await kube.list("pods", namespace=gpu_ns)) == ["p3"]
    assert _names(await kube.list("pods", field_selector=f"metadata.namespace={gpu_ns}")) == ["p3"]
    assert _names(await kube.list("pods", namespace=ns)) == ["p1", "p2", "pending"]


async def test_list_pods_label_and_field_selector_combined(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    ns = await seed_namespace(kube_client, unique)
    plugin = {"app": "nvidia-device-plugin-daemonset"}
    await seed_pod(kube_client, "dp-n1", ns, node_name="n1", labels=plugin)
    await seed_pod(kube_client, "dp-n2", ns, node_name="n2", labels=plugin)
    await seed_pod(kube_client, "other", ns, node_name="n1")
    got = await kube.list(
        "pods", namespace=ns, label_selector="app=nvidia-device-plugin-daemonset", field_selector="spec.nodeName=n1"
    )
    assert _names(got) == ["dp-n1"]


async def test_unsupported_field_selector_is_a_400(kube: LightkubeKube) -> None:
    with pytest.raises(KubeError) as exc:
        await kube.list("pods", field_selector="spec.priority=3")
    assert exc.value.status == 400


async def test_delete_unbound_pod_is_immediate_then_404(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    ns = await seed_namespace(kube_client, unique)
    await seed_pod(kube_client, "dp", ns)  # no nodeName: the server deletes it at once (grace 0)
    await kube.delete("pods", "dp", ns)
    assert await kube.list("pods", namespace=ns) == []
    with pytest.raises(NotFound):
        await kube.delete("pods", "dp", ns)


async def test_delete_bound_pod_is_graceful_on_a_real_server(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    """Unlike the fakes, a bound, running pod is only *marked* (deletionTimestamp); the kubelet
    finishes the deletion. Callers that restart the device plugin must not expect it gone at once."""
    ns = await seed_namespace(kube_client, unique)
    await seed_pod(kube_client, "dp", ns, node_name=f"{unique}-n1")
    await kube.delete("pods", "dp", ns)
    (pod,) = await kube.list("pods", namespace=ns)
    assert pod["metadata"]["deletionTimestamp"]
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    await kube.delete("pods", "dp", ns)  # deleting again is fine while it terminates
    # What a kubelet does at the end: delete with grace 0. Then it is gone.
    await kube_client.delete(Pod, "dp", namespace=ns, grace_period=0)
    assert await kube.list("pods", namespace=ns) == []


async def test_delete_pod_in_missing_namespace_raises_not_found(kube: LightkubeKube, unique: str) -> None:
    with pytest.raises(NotFound):
        await kube.delete("pods", "dp", f"{unique}-nowhere")


# -- events ----------------------------------------------------------------------------------------
async def _events(client: AsyncClient, namespace: str, regarding: str) -> list[Obj]:
    events = client.list(EventResource, namespace=namespace, fields={"regarding.name": regarding})
    return [e.to_dict() async for e in events]


async def test_create_event_stores_events_k8s_io_v1_object(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    node = f"{unique}-n1"
    ref = ObjectRef(kind="Node", name=node, uid="u-1")
    await kube.create_event(Event(ref, reason="MigPartitioned", note="applied 2x1g.10gb", type="Normal"))
    await kube.create_event(Event(ref, reason="MigFailed", note="x" * 5000, type="Warning", action="Apply"))
    events = await _events(kube_client, "default", node)
    assert len(events) == 2
    by_reason = {e["reason"]: e for e in events}
    ok = by_reason["MigPartitioned"]
    assert ok["apiVersion"] == "events.k8s.io/v1"
    assert ok["reportingController"] == "nos.nebuly.com/agent"
    assert ok["reportingInstance"] == "agent-test"
    assert ok["action"] == "Partitioning"
    assert ok["type"] == "Normal"
    assert ok["note"] == "applied 2x1g.10gb"
    assert ok["regarding"] == {"kind": "Node", "name": node, "uid": "u-1", "apiVersion": "v1"}
    assert ok["eventTime"].endswith("Z")
    failed = by_reason["MigFailed"]
    assert failed["type"] == "Warning" and failed["action"] == "Apply"
    assert len(failed["note"].encode()) == 1024  # truncated to the server's limit, and accepted


async def test_event_about_namespaced_pod_lands_in_its_namespace(
    kube: LightkubeKube, kube_client: AsyncClient, unique: str
) -> None:
    ns = await seed_namespace(kube_client, unique)
    await kube.create_event(Event(ObjectRef(kind="Pod", name="p1", namespace=ns), reason="Waiting", note="n"))
    events = await _events(kube_client, ns, "p1")
    assert [e["regarding"]["namespace"] for e in events] == [ns]


async def test_event_in_missing_namespace_is_not_found(kube: LightkubeKube, unique: str) -> None:
    """Real-server-only: namespace admission rejects objects in a namespace that does not exist."""
    with pytest.raises(NotFound):
        await kube.create_event(Event(ObjectRef(kind="Pod", name="p1", namespace=f"{unique}-gone"), "R", "n"))


async def test_invalid_event_is_rejected_with_422(kube: LightkubeKube) -> None:
    with pytest.raises(KubeError) as exc:
        await kube.create_event(Event(ObjectRef("Node", "n1"), reason="", note="n"))
    assert exc.value.status == 422
    assert "reason" in str(exc.value)


async def test_event_time_with_zero_microseconds_is_accepted(
    control_plane: ControlPlane, kube_client: AsyncClient, unique: str
) -> None:
    def clock() -> datetime:
        return datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    adapter = LightkubeKube(control_plane.client(), component="partitioner", clock=clock, retry=QUICK_RETRY)
    try:
        await adapter.create_event(Event(ObjectRef("Node", f"{unique}-n1"), reason="R", note="n"))
    finally:
        await adapter.close()
    (event,) = await _events(kube_client, "default", f"{unique}-n1")
    assert event["eventTime"].startswith("2026-01-01T12:00:00.000001")
    assert event["reportingController"] == "nos.nebuly.com/partitioner"


# -- config ----------------------------------------------------------------------------------------
async def test_from_kubeconfig_talks_tls_with_token(
    control_plane: ControlPlane, kube_client: AsyncClient, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_node(kube_client, f"{unique}-n1")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    async with from_kubeconfig(str(control_plane.kubeconfig_path), component="partitioner") as kube:
        assert (await kube.get("nodes", f"{unique}-n1"))["metadata"]["name"] == f"{unique}-n1"
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    async with from_kubeconfig(None, retry=QUICK_RETRY) as kube:
        assert _names(await kube.list("nodes", label_selector=f"kubernetes.io/hostname={unique}-none")) == []


async def test_wrong_token_is_a_401_kube_error(control_plane: ControlPlane, tmp_path: Path) -> None:
    conf = control_plane.kubeconfig()
    conf["users"][0]["user"]["token"] = "wrong"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(conf))
    async with from_kubeconfig(str(path), retry=QUICK_RETRY) as kube:
        with pytest.raises(KubeError) as exc:
            await kube.list("nodes")
    assert exc.value.status == 401


# -- generic verbs ---------------------------------------------------------------------------------
async def test_generic_verbs_on_a_lease(kube: LightkubeKube, kube_client: AsyncClient, unique: str) -> None:
    """The same verbs and preconditions as tests/kube/test_port_contract.py, on the real server."""
    ns = await seed_namespace(kube_client, unique)
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "nos", "namespace": ns},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    assert (await kube.create("leases", body))["spec"]["holderIdentity"] == "a"
    with pytest.raises(Conflict):
        await kube.create("leases", body)
    got = await kube.get("leases", "nos", ns)
    got["spec"]["holderIdentity"] = "b"
    assert (await kube.replace("leases", got))["spec"]["holderIdentity"] == "b"
    with pytest.raises(Conflict):
        await kube.replace("leases", got)
    stale = {"metadata": {"resourceVersion": got["metadata"]["resourceVersion"]}, "spec": {"holderIdentity": "c"}}
    with pytest.raises(Conflict):
        await kube.patch("leases", "nos", stale, ns)
    patched = await kube.patch("leases", "nos", {"spec": {"holderIdentity": None}}, ns)
    assert "holderIdentity" not in patched["spec"]
    assert [o["metadata"]["name"] for o in await kube.list("leases", ns)] == ["nos"]
    await kube.delete("leases", "nos", ns)
    with pytest.raises(NotFound):
        await kube.get("leases", "nos", ns)
