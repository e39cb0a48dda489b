"""``Kube`` in memory, for unit tests and ``nos simulate``.

Backed by the same ``ObjectStore`` as the tests' fake API server, so write semantics match it
(resourceVersion bump on every write, merge patch, 404/409, selectors). Adds what tests and a
simulator need on top of the port: direct object set-up, a pod-deleted hook (a fake DaemonSet can
recreate the device-plugin pod after a delay), recorded Events, and injected failures.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from nos.kube.events import EventSeries, event_body
from nos.kube.fake.selectors import Selector
from nos.kube.fake.store import ObjectStore, Watch
from nos.kube.port import Event, KubeError, Obj

PodHook = Callable[[Obj], Awaitable[None] | None]


class MemoryKube:
    """An in-memory cluster. ``events`` lists the port Events created, in order; the stored
    events.k8s.io objects are in ``store`` (resource ``"events"``)."""

    def __init__(
        self,
        store: ObjectStore | None = None,
        component: str = "agent",
        instance: str = "memory",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store or ObjectStore(clock=clock)
        self.component = component
        self.instance = instance
        self.events: list[Event] = []
        self._series = EventSeries()
        self.calls: list[str] = []
        self._clock = clock or (lambda: datetime.now(UTC))
        self._failures: dict[str, list[KubeError]] = {}

    # -- test / simulator helpers ------------------------------------------------------------------
    def add_node(self, node: Obj) -> Obj:
        return self.store.create("nodes", node)

    def add_pod(self, pod: Obj) -> Obj:
        return self.store.create("pods", pod, (pod.get("metadata") or {}).get("namespace"))

    def update_node(self, node: Obj) -> Obj:
        """Replace a node wholesale, status included (what kubelet + controllers would do)."""
        name = node["metadata"]["name"]
        body = copy.deepcopy(node)
        body.setdefault("metadata", {}).pop("resourceVersion", None)
        self.store.replace("nodes", name, body)
        return self.store.replace("nodes", name, body, subresource="status")

    def update_pod(self, pod: Obj) -> Obj:
        """Replace a pod wholesale, status included (e.g. to bind it or change its phase)."""
        meta = pod["metadata"]
        body = copy.deepcopy(pod)
        body["metadata"].pop("resourceVersion", None)
        ns = meta.get("namespace", "default")
        self.store.replace("pods", meta["name"], body, ns)
        return self.store.replace("pods", meta["name"], body, ns, subresource="status")

    def remove_node(self, name: str) -> None:
        self.store.delete("nodes", name)

    def remove_pod(self, namespace: str, name: str) -> None:
        self.store.delete("pods", name, namespace)

    def on_pod_deleted(self, hook: PodHook) -> None:
        """``hook(pod)`` runs after every pod delete; a coroutine result runs as a task (await
        ``settle()`` to wait for it)."""
        self.store.on_delete("pods", hook)

    async def settle(self) -> None:
        await self.store.settle()

    def fail_next(self, method: str, error: KubeError, times: int = 1) -> None:
        """Make the next ``times`` calls of port method ``method`` raise ``error``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_s: int | None = None,
    ) -> Watch:
        """Watch the store, same semantics as the fake server's watch. Unlike the HTTP adapter, a 410
        is raised here by the call itself (the port allows either: both happen before any event)."""
        self._enter("watch")
        selector = Selector.parse(resource, label_selector, field_selector)
        return self.store.watch(resource, namespace, selector, resource_version, timeout_s)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    # -- Kube --------------------------------------------------------------------------------------
    async def get_node(self, name: str) -> Obj:
        self._enter("get_node")
        return self.store.get("nodes", name)

    async def list_nodes(self, label_selector: str | None = None) -> list[Obj]:
        self._enter("list_nodes")
        return self.store.list("nodes", None, Selector.parse("nodes", label_selector, None))[0]

    async def patch_node_annotations(
        self, name: str, patch: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        self._enter("patch_node_annotations")
        metadata: dict[str, Any] = {"annotations": dict(patch)}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return self.store.merge_patch("nodes", name, {"metadata": metadata})

    async def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        self._enter("list_pods")
        return self.store.list("pods", namespace, Selector.parse("pods", label_selector, field_selector))[0]

    async def list_with_version(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        self._enter("list_with_version")
        return self.store.list(resource, namespace, Selector.parse(resource, label_selector, field_selector))

    async def get_lease(self, namespace: str, name: str) -> Obj:
        self._enter("get_lease")
        return self.store.get("leases", name, namespace)

    async def create_lease(self, lease: Obj) -> Obj:
        self._enter("create_lease")
        return self.store.create("leases", lease, (lease.get("metadata") or {}).get("namespace"))

    async def replace_lease(self, lease: Obj) -> Obj:
        self._enter("replace_lease")
        meta = lease["metadata"]
        return self.store.replace("leases", meta["name"], lease, meta.get("namespace"))

    async def delete_pod(self, namespace: str, name: str) -> None:
        self._enter("delete_pod")
        self.store.delete("pods", name, namespace)

    async def create_event(self, event: Event) -> None:
        self._enter("create_event")
        when = self._clock()
        repeat = self._series.repeat(event, when)
        if repeat is not None:
            name, namespace, patch = repeat
            try:
                self.store.merge_patch("events", name, patch, namespace)
                self.events.append(event)
                return
            except KubeError as e:
                if e.status != 404:
                    raise
                self._series.forget(event)
        body = event_body(event, self.component, self.instance, when)
        self.store.create("events", body, body["metadata"]["namespace"])
        self.events.append(event)
        self._series.created(event, body, when)


def recreate_after(kube: MemoryKube, delay: float, rename: Callable[[str], str] | None = None) -> PodHook:
    """A pod-deleted hook acting like a DaemonSet: after ``delay`` seconds a fresh copy of the pod
    (new uid, no status, name from ``rename``) is created. Filter by labels in a wrapper if needed."""

    async def hook(pod: Obj) -> None:
        await asyncio.sleep(delay)
        meta = pod["metadata"]
        fresh = copy.deepcopy(pod)
        fresh.pop("status", None)
        keep = ("name", "namespace", "labels", "annotations", "ownerReferences")
        fresh["metadata"] = {k: v for k, v in meta.items() if k in keep}
        if rename is not None:
            fresh["metadata"]["name"] = rename(meta["name"])
        kube.add_pod(fresh)

    return hook
