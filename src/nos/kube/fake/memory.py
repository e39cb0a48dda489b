"""``Kube`` in memory, for unit tests and ``nos simulate``.

Backed by the same ``ObjectStore`` as the tests' fake API server, so write semantics match it
(resourceVersion bump on every write, merge patch, 404/409, selectors). Adds what tests and a
simulator need on top of the port: direct object set-up, a pod-deleted hook (a fake DaemonSet can
recreate the device-plugin pod after a delay), recorded Events, and injected failures.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from nos.kube.events import EventSeries
from nos.kube.fake.selectors import Selector
from nos.kube.fake.store import ObjectStore, Watch
from nos.kube.port import Event, KubeError, Obj, ObjList, Resource

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

    def fail_next(self, call: str, error: KubeError, times: int = 1) -> None:
        """Make the next ``times`` port calls named ``call`` raise ``error``: a verb and a resource as
        recorded in ``calls`` (``"patch nodes"``), or a bare verb for any resource (``"patch"``)."""
        self._failures.setdefault(call, []).extend([error] * times)

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_s: int | None = None,
    ) -> Watch:
        """Watch the store, same semantics as the fake server's watch. Unlike the HTTP adapter, a 410
        is raised here by the call itself (the port allows either: both happen before any event)."""
        self._enter("watch", resource)
        selector = Selector.parse(resource, label_selector, field_selector)
        return self.store.watch(resource, namespace, selector, resource_version, timeout_s)

    def _enter(self, verb: str, resource: str | None = None) -> None:
        """Record the call in ``calls`` (``"<verb> <resource>"``) and raise an injected failure, if any."""
        call = f"{verb} {resource}" if resource else verb
        self.calls.append(call)
        for key in (call, verb):
            pending = self._failures.get(key)
            if pending:
                raise pending.pop(0)

    # -- Kube --------------------------------------------------------------------------------------
    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        self._enter("get", resource)
        return self.store.get(resource, name, namespace)

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjList:
        self._enter("list", resource)
        return self.store.list(resource, namespace, Selector.parse(resource, label_selector, field_selector))[0]

    async def list_with_version(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[ObjList, str]:
        self._enter("list_with_version", resource)
        return self.store.list(resource, namespace, Selector.parse(resource, label_selector, field_selector))

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        self._enter("create", resource)
        return self.store.create(resource, obj, (obj.get("metadata") or {}).get("namespace"))

    async def replace(self, resource: Resource, obj: Obj) -> Obj:
        self._enter("replace", resource)
        meta = obj["metadata"]
        return self.store.replace(resource, meta["name"], obj, meta.get("namespace"))

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        self._enter("patch", resource)
        return self.store.merge_patch(resource, name, patch, namespace)

    async def close(self) -> None:
        """Nothing to release; counted in ``calls`` so tests see that the owner closed it."""
        self.calls.append("close")

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> None:
        self._enter("delete", resource)
        self.store.delete(resource, name, namespace)

    async def create_event(self, event: Event) -> None:
        self._enter("create_event")

        async def patch(name: str, namespace: str, body: Obj) -> None:
            self.store.merge_patch("events", name, body, namespace)

        async def create(body: Obj) -> None:
            self.store.create("events", body, body["metadata"]["namespace"])

        await self._series.send(event, self._clock(), self.component, self.instance, patch, create)
        self.events.append(event)


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
