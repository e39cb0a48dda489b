"""The Kubernetes API surface nos' processes use, as a small async interface.

Implemented by ``nos.kube.client`` (lightkube over HTTP) and ``nos.kube.fake.memory`` (in-memory, for
tests and ``nos simulate``). Objects travel as plain dicts in the API's JSON shape.
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


Resource = Literal["nodes", "pods"]
"""The kinds the processes cache through list + watch."""

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


class Kube(Protocol):
    async def get_node(self, name: str) -> Obj: ...

    async def list_nodes(self, label_selector: str | None = None) -> list[Obj]: ...

    async def patch_node_annotations(
        self, name: str, patch: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        """JSON merge patch of ``metadata.annotations`` (None deletes a key). With
        ``resource_version`` the patch fails with Conflict if the node changed since."""
        ...

    async def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]: ...

    async def delete_pod(self, namespace: str, name: str) -> None: ...

    async def create_event(self, event: Event) -> None: ...

    async def list_with_version(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
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

    async def get_lease(self, namespace: str, name: str) -> Obj: ...

    async def create_lease(self, lease: Obj) -> Obj:
        """Create a coordination.k8s.io/v1 Lease (``AlreadyExists`` is a ``Conflict``)."""
        ...

    async def replace_lease(self, lease: Obj) -> Obj:
        """PUT the Lease; its ``metadata.resourceVersion`` is a precondition (Conflict if stale)."""
        ...
