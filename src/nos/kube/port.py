"""The ``Kube`` port: the Kubernetes API verbs nos' processes use, the API errors and ``Event``.

Generic verbs over a few kinds (as lightkube's and client-go's clients have them), so a new caller
needs no new method. Implemented by ``nos.kube.client`` (lightkube over HTTP) and
``nos.kube.fake.memory`` (in memory, for tests and ``nos simulate``). Objects travel as plain dicts
in the API's JSON shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Obj = dict[str, Any]


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (404, 409, 429, 5xx...)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class Conflict(KubeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


class Gone(KubeError):
    """A watch asked for a resourceVersion the server no longer has (410 Expired): re-list."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


Resource = Literal["nodes", "pods", "leases"]
"""The kinds nos reads and writes (Events go through ``create_event``): core/v1 Nodes and Pods,
coordination.k8s.io/v1 Leases."""

ObjList = list[Obj]
"""Objects of one list call (an alias: the port's own ``list`` method hides the builtin in its class)."""

WatchEvent = tuple[str, Obj]
"""``(type, object)``: type is ADDED, MODIFIED, DELETED or BOOKMARK."""


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None
    api_version: str = "v1"


@dataclass(frozen=True)
class Event:
    """An events.k8s.io/v1 Event about ``regarding`` (shown by ``kubectl describe``)."""

    regarding: ObjectRef
    reason: str
    note: str
    type: Literal["Normal", "Warning"] = "Normal"
    action: str = "Partitioning"


def annotations_patch(annotations: Mapping[str, str | None], resource_version: str | None = None) -> Obj:
    """The JSON merge patch that sets ``annotations`` (None deletes a key); with ``resource_version``
    it fails with ``Conflict`` if the object changed since that version."""
    metadata: Obj = {"annotations": dict(annotations)}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"metadata": metadata}


class Kube(Protocol):
    """Generic verbs over ``Resource`` kinds, as lightkube's and client-go's clients have them.
    ``namespace`` applies to Pods and Leases (None lists every namespace) and is ignored for Nodes."""

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj: ...

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjList: ...

    async def list_with_version(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[ObjList, str]:
        """Objects plus the list's resourceVersion (where a watch resumes)."""
        ...

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_s: int | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Changes after ``resource_version``; an object entering the selector arrives as ADDED, one
        leaving it as DELETED. The stream may end at any time (server timeout, dropped connection):
        watch again from the last resourceVersion seen. Raises ``Gone`` when that version is too old."""
        ...

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        """Create ``obj`` (its ``metadata.namespace`` for namespaced kinds); a name that exists is a
        ``Conflict``. Not retried: a replay could not tell its own success from a rival's."""
        ...

    async def replace(self, resource: Resource, obj: Obj) -> Obj:
        """PUT ``obj``; its ``metadata.resourceVersion`` is a precondition (``Conflict`` if stale)."""
        ...

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """JSON merge patch (RFC 7386: None deletes a key); a ``metadata.resourceVersion`` in the patch
        is a precondition (``Conflict`` if the object changed since). See ``annotations_patch``."""
        ...

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> None: ...

    async def create_event(self, event: Event) -> None:
        """Record ``event`` as an events.k8s.io/v1 Event; a repeat counts on the first one's series."""
        ...

    async def close(self) -> None:
        """Release the connections (the runtime manager calls it when the process stops)."""
        ...
