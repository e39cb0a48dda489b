"""The real kube-apiserver (and kube-scheduler) behave the way nos and its fakes assume.

These are the facts the fake API server in tests/kube/ imitates; if one fails here, the fake is
wrong too. Objects get names unique per test (``unique``) and are left behind: the control plane
lives for the session only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.operators import Operator
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.resources.events_v1 import Event
from lightkube.types import PatchType

from tests.realkube.control_plane import ControlPlane, Process, eventually, ready_condition

T = TypeVar("T")
MIG_RESOURCE = "nvidia.com/mig-1g.10gb"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def node_obj(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Node:
    return Node(metadata=ObjectMeta(name=name, labels=labels or {}, annotations=annotations or {}))


def pod_obj(
    name: str,
    namespace: str,
    node_name: str | None = None,
    labels: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
) -> Pod:
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if limits:
        container["resources"] = {"limits": limits}
    spec: dict[str, Any] = {"containers": [container]}
    if node_name:
        spec["nodeName"] = node_name
    if node_selector:
        spec["nodeSelector"] = node_selector
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }
    return cast(Pod, Pod.from_dict(body))


async def new_namespace(client: AsyncClient, name: str) -> str:
    await client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


def status_code(exc: ApiError) -> int:
    return int(exc.status.code or exc.response.status_code)


class RawSelector(Operator[str]):
    """A selector string passed through verbatim (kubectl syntax, as the nos adapter sends it);
    lightkube otherwise builds selectors from dicts. Use as ``labels={"": RawSelector(s)}``."""

    def __init__(self, selector: str) -> None:
        super().__init__("equal", "", selector)

    def encode(self, key: str) -> str:
        return self.value


# -- the server ------------------------------------------------------------------------------------
async def test_server_is_1_20_and_answers_readyz(control_plane: ControlPlane) -> None:
    assert control_plane.version.startswith("v1.20."), control_plane.version
    assert control_plane.get("/readyz") == (200, "ok")
    assert control_plane.kubeconfig_path.is_file()


async def test_requests_with_a_wrong_token_are_rejected(control_plane: ControlPlane) -> None:
    stranger = ControlPlane(workdir=control_plane.workdir, binaries=control_plane.binaries)
    stranger.url, stranger.ca_file, stranger.token = control_plane.url, control_plane.ca_file, "wrong"
    status, _ = stranger.get("/api/v1/nodes")
    assert status == 401


# -- nodes: admission, patches, optimistic concurrency, selectors ----------------------------------
async def test_new_node_gets_the_not_ready_taint_from_admission(kube_client: AsyncClient, unique: str) -> None:
    created = await kube_client.create(node_obj(f"{unique}-n"))
    assert created.spec is not None and created.spec.taints is not None
    taints = [(t.key, t.effect) for t in created.spec.taints]
    assert (NOT_READY_TAINT, "NoSchedule") in taints
    assert created.metadata is not None and created.metadata.uid and created.metadata.resourceVersion


async def test_merge_patch_sets_and_null_deletes_annotations(kube_client: AsyncClient, unique: str) -> None:
    name = f"{unique}-n"
    created = await kube_client.create(node_obj(name, annotations={"keep": "k", "change": "old", "drop": "x"}))
    patch = {"metadata": {"annotations": {"change": "new", "drop": None, "add": "a"}}}
    patched = await kube_client.patch(Node, name, patch, patch_type=PatchType.MERGE)
    assert patched.metadata is not None and created.metadata is not None
    assert patched.metadata.annotations == {"keep": "k", "change": "new", "add": "a"}
    assert int(patched.metadata.resourceVersion or 0) > int(created.metadata.resourceVersion or 0)
    # patching with the current resourceVersion as precondition succeeds
    rv = patched.metadata.resourceVersion
    again = await kube_client.patch(
        Node, name, {"metadata": {"resourceVersion": rv, "annotations": {"x": "1"}}}, patch_type=PatchType.MERGE
    )
    assert again.metadata is not None and again.metadata.annotations is not None
    assert again.metadata.annotations["x"] == "1"


async def test_patch_with_stale_resource_version_is_409(kube_client: AsyncClient, unique: str) -> None:
    name = f"{unique}-n"
    created = await kube_client.create(node_obj(name))
    assert created.metadata is not None
    stale = created.metadata.resourceVersion
    await kube_client.patch(Node, name, {"metadata": {"annotations": {"first": "1"}}}, patch_type=PatchType.MERGE)
    body = {"metadata": {"resourceVersion": stale, "annotations": {"second": "2"}}}
    with pytest.raises(ApiError) as exc:
        await kube_client.patch(Node, name, body, patch_type=PatchType.MERGE)
    assert status_code(exc.value) == 409
    assert exc.value.status.reason == "Conflict"
    current = await kube_client.get(Node, name)
    assert current.metadata is not None and current.metadata.annotations == {"first": "1"}


async def test_patch_of_missing_node_is_404(kube_client: AsyncClient, unique: str) -> None:
    with pytest.raises(ApiError) as exc:
        await kube_client.patch(Node, f"{unique}-ghost", {"metadata": {"labels": {"a": "b"}}})
    assert status_code(exc.value) == 404


async def test_label_selectors_on_list(kube_client: AsyncClient, unique: str) -> None:
    scope = {"nos-test": unique}
    await kube_client.create(node_obj(f"{unique}-a", labels={**scope, "gpu": "a100", "mig": "yes"}))
    await kube_client.create(node_obj(f"{unique}-b", labels={**scope, "gpu": "h100"}))
    await kube_client.create(node_obj(f"{unique}-c", labels=scope))

    async def names(selector: str) -> list[str]:
        full = f"nos-test={unique},{selector}" if selector else f"nos-test={unique}"
        nodes = kube_client.list(Node, labels={"": RawSelector(full)})
        return sorted([n.metadata.name async for n in nodes if n.metadata and n.metadata.name])

    assert await names("") == [f"{unique}-a", f"{unique}-b", f"{unique}-c"]
    assert await names("mig=yes") == [f"{unique}-a"]
    assert await names("gpu in (a100,h100)") == [f"{unique}-a", f"{unique}-b"]
    assert await names("gpu notin (a100)") == [f"{unique}-b", f"{unique}-c"]
    assert await names("gpu!=a100") == [f"{unique}-b", f"{unique}-c"]  # != also matches a missing key
    assert await names("gpu") == [f"{unique}-a", f"{unique}-b"]
    assert await names("!gpu") == [f"{unique}-c"]


async def test_field_selector_spec_node_name(kube_client: AsyncClient, unique: str) -> None:
    ns = await new_namespace(kube_client, unique)
    await kube_client.create(pod_obj("p1", ns, node_name="n1"))
    await kube_client.create(pod_obj("p2", ns, node_name="n2"))
    await kube_client.create(pod_obj("pending", ns))

    async def names(fields: dict[str, Any]) -> list[str]:
        pods = kube_client.list(Pod, namespace=ns, fields=fields)
        return sorted([p.metadata.name async for p in pods if p.metadata and p.metadata.name])

    assert await names({"spec.nodeName": "n1"}) == ["p1"]
    assert await names({"spec.nodeName": ""}) == ["pending"]
    assert await names({"metadata.name": "p2"}) == ["p2"]
    # every created pod starts Pending: the server resets .status on create
    assert await names({"status.phase": "Pending"}) == ["p1", "p2", "pending"]


async def test_status_subresource_only_changes_status(kube_client: AsyncClient, unique: str) -> None:
    name = f"{unique}-n"
    await kube_client.create(node_obj(name))
    body = {"spec": {"unschedulable": True}, "status": {"allocatable": {"cpu": "4"}, "capacity": {"cpu": "4"}}}
    patched = await kube_client.patch(Node.Status, name, body, patch_type=PatchType.MERGE)
    assert patched.status is not None and patched.status.allocatable == {"cpu": "4"}
    assert patched.spec is not None and not patched.spec.unschedulable
    # ... and a main-resource patch ignores .status
    body = {"metadata": {"labels": {"x": "y"}}, "status": {"allocatable": {"cpu": "99"}}}
    main = await kube_client.patch(Node, name, body, patch_type=PatchType.MERGE)
    assert main.status is not None and main.status.allocatable == {"cpu": "4"}
    assert main.metadata is not None and main.metadata.labels == {"x": "y"}


# -- leases, events, watch -------------------------------------------------------------------------
async def test_lease_replace_with_stale_resource_version_is_409(kube_client: AsyncClient, unique: str) -> None:
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"{unique}-lease", "namespace": "default"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": None, "renewTime": None},
    }
    created = await kube_client.create(cast(Lease, Lease.from_dict(body)))
    assert created.metadata is not None and created.spec is not None
    stale_rv = created.metadata.resourceVersion

    created.spec.holderIdentity = "b"
    renewed = await kube_client.replace(created)  # carries the current resourceVersion: accepted
    assert renewed.spec is not None and renewed.spec.holderIdentity == "b"
    assert renewed.metadata is not None and renewed.metadata.resourceVersion != stale_rv

    created.spec.holderIdentity = "c"
    assert created.metadata.resourceVersion == stale_rv
    with pytest.raises(ApiError) as exc:
        await kube_client.replace(created)
    assert status_code(exc.value) == 409
    current = await kube_client.get(Lease, f"{unique}-lease", namespace="default")
    assert current.spec is not None and current.spec.holderIdentity == "b"


async def test_events_k8s_io_v1_create_and_validation(kube_client: AsyncClient, unique: str) -> None:
    body: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{unique}-node.1", "namespace": "default"},
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": "nos.nebuly.com/agent",
        "reportingInstance": "agent-test",
        "action": "Partitioning",
        "reason": "MigPartitioned",
        "note": "applied 2x1g.10gb",
        "type": "Normal",
        "regarding": {"kind": "Node", "name": f"{unique}-node", "apiVersion": "v1"},
    }
    created = await kube_client.create(cast(Event, Event.from_dict(body)))
    assert created.reason == "MigPartitioned" and created.reportingController == "nos.nebuly.com/agent"
    got = await kube_client.get(Event, f"{unique}-node.1", namespace="default")
    assert got.note == "applied 2x1g.10gb"
    assert got.regarding is not None and got.regarding.name == f"{unique}-node"

    # The real validation: reportingController is required, note is capped at 1 kB, and an Event
    # about a cluster-scoped object lives in "default" or "kube-system" only ("default" needs
    # kubernetes#100125, backported by scripts/kube-control-plane; stock 1.20.2 answers 422).
    def variant(n: int, namespace: str = "default", **changes: Any) -> Event:
        return cast(
            Event,
            Event.from_dict({**body, "metadata": {"name": f"{unique}-node.{n}", "namespace": namespace}, **changes}),
        )

    for bad in (variant(2, reportingController=""), variant(3, note="x" * 1025), variant(4, "kube-public")):
        with pytest.raises(ApiError) as exc:
            await kube_client.create(bad)
        assert status_code(exc.value) == 422, bad
    assert "does not match event.namespace" in str(exc.value)
    assert (await kube_client.create(variant(5, "kube-system"))).reason == "MigPartitioned"
    assert (await kube_client.create(variant(6, note="x" * 1024))).note == "x" * 1024


async def test_watch_from_list_resource_version_sees_added_and_modified(kube_client: AsyncClient, unique: str) -> None:
    labels: dict[str, Any] = {"nos-test": unique}
    listing = kube_client.list(Node, labels=labels)
    assert [n async for n in listing] == []
    rv = listing.resourceVersion
    name = f"{unique}-w"
    await kube_client.create(node_obj(name, labels=labels))
    await kube_client.patch(Node, name, {"metadata": {"annotations": {"a": "1"}}}, patch_type=PatchType.MERGE)
    # An object outside the selector must not show up.
    await kube_client.create(node_obj(f"{unique}-other", labels={"nos-test": unique + "x"}))

    seen: list[tuple[str, str, dict[str, str]]] = []

    async def collect() -> None:
        async for kind, obj in kube_client.watch(Node, labels=labels, resource_version=rv, server_timeout=30):
            assert obj.metadata is not None
            seen.append((kind, obj.metadata.name or "", dict(obj.metadata.annotations or {})))
            if len(seen) == 2:
                return

    await asyncio.wait_for(collect(), timeout=30)
    assert seen == [("ADDED", name, {}), ("MODIFIED", name, {"a": "1"})]


# -- the scheduler ---------------------------------------------------------------------------------
async def test_scheduler_waits_for_the_mig_resource_then_binds(
    kube_client: AsyncClient, scheduler: Process, unique: str
) -> None:
    node_name = f"{unique}-gpu"
    labels = {"nos-test": unique}
    created = await kube_client.create(node_obj(node_name, labels=labels))
    assert created.spec is not None and created.spec.taints  # the not-ready taint, see above

    # Play kubelet: capacity/allocatable without the MIG resource, Ready, and no not-ready taint.
    base = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    ready = ready_condition()
    status = {"status": {"capacity": base, "allocatable": base, "conditions": [ready]}}
    await kube_client.patch(Node.Status, node_name, status, patch_type=PatchType.MERGE)
    untainted = await kube_client.patch(Node, node_name, {"spec": {"taints": None}}, patch_type=PatchType.MERGE)
    assert untainted.spec is not None and not untainted.spec.taints

    ns = await new_namespace(kube_client, unique)
    # nodeSelector keeps other tests' (not-ready) nodes out of the scheduler's message.
    await kube_client.create(pod_obj("gpu-job", ns, limits={MIG_RESOURCE: "1"}, node_selector=labels))

    async def unschedulable() -> str | None:
        pod = await kube_client.get(Pod, "gpu-job", namespace=ns)
        for cond in (pod.status.conditions or []) if pod.status else []:
            if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                return cond.message or ""
        return None

    message = await eventually(unschedulable, 30, "pod gpu-job PodScheduled=False/Unschedulable")
    assert f"Insufficient {MIG_RESOURCE}" in message, message
    assert not (await kube_client.get(Pod, "gpu-job", namespace=ns)).spec.nodeName  # type: ignore[union-attr]

    # The agent's job: advertise the MIG device; the scheduler then binds the pending pod.
    with_mig = {**base, MIG_RESOURCE: "1"}
    patch = {"status": {"capacity": with_mig, "allocatable": with_mig}}
    await kube_client.patch(Node.Status, node_name, patch, patch_type=PatchType.MERGE)

    async def bound() -> str | None:
        pod = await kube_client.get(Pod, "gpu-job", namespace=ns)
        return pod.spec.nodeName if pod.spec and pod.spec.nodeName else None

    assert await eventually(bound, 60, "pod gpu-job bound after the node advertises the resource") == node_name
    pod = await kube_client.get(Pod, "gpu-job", namespace=ns)
    assert pod.status is not None
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    assert conditions.get("PodScheduled") == "True"
