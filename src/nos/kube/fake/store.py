"""An in-memory object store with kube-apiserver write semantics.

One store backs both ``MemoryKube`` (port-level fake) and the HTTP fake API server in the tests, so
the two cannot drift apart: a global resourceVersion bumped on every write, uid/creationTimestamp/
generation, 404/409 (AlreadyExists and stale-resourceVersion Conflict), JSON merge patch (RFC 7386),
the status subresource rule (main-resource writes keep ``.status``, status writes keep the rest),
events.k8s.io/v1 validation (422), watch history with 410 Expired, and the selector transition rule
(an object entering a watch's selector arrives as ADDED, one leaving it as DELETED).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import inspect
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nos.kube.fake.selectors import Selector
from nos.kube.port import Conflict, Gone, KubeError, NotFound, Obj

Clock = Callable[[], datetime]
DeleteHook = Callable[[Obj], object]


class AlreadyExists(Conflict):
    """Create of a name that exists (409, reason AlreadyExists)."""


class Invalid(KubeError):
    """The object fails validation (422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 422)


class BadRequest(KubeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


@dataclass(frozen=True)
class ResourceInfo:
    plural: str
    kind: str
    api_version: str
    namespaced: bool
    has_status: bool


RESOURCES: dict[str, ResourceInfo] = {
    "nodes": ResourceInfo("nodes", "Node", "v1", namespaced=False, has_status=True),
    "pods": ResourceInfo("pods", "Pod", "v1", namespaced=True, has_status=True),
    "events": ResourceInfo("events", "Event", "events.k8s.io/v1", namespaced=True, has_status=False),
    "leases": ResourceInfo("leases", "Lease", "coordination.k8s.io/v1", namespaced=True, has_status=False),
}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's: no vowels, no confusables


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def validate_event(obj: Obj) -> None:
    """The events.k8s.io/v1 create validation the apiserver applies (the fields nos must send)."""
    problems = []
    if not _MICRO_TIME.match(str(obj.get("eventTime") or "")):
        problems.append("eventTime: Required value (RFC3339 with microseconds)")
    for field in ("reportingController", "reportingInstance", "action", "reason"):
        value = obj.get(field)
        if not value:
            problems.append(f"{field}: Required value")
        elif field != "reportingInstance" and len(value) > 128:
            problems.append(f"{field}: Too long: must have at most 128 characters")
    if len(obj.get("reportingInstance") or "") > 128:
        problems.append("reportingInstance: Too long: must have at most 128 characters")
    if obj.get("type") not in ("Normal", "Warning"):
        problems.append("type: Unsupported value: must be Normal or Warning")
    if len((obj.get("note") or "").encode()) > 1024:
        problems.append("note: Too long: must have at most 1024 bytes")
    regarding = obj.get("regarding") or {}
    if not regarding.get("kind") or not regarding.get("name"):
        problems.append("regarding: kind and name required")
    if problems:
        raise Invalid("Event is invalid: " + "; ".join(problems))


_VALIDATORS: dict[str, Callable[[Obj], None]] = {"events": validate_event}


@dataclass
class Change:
    """One write, kept in the history for watch replay."""

    rv: int
    resource: str
    namespace: str
    name: str
    old: Obj | None
    new: Obj | None


def _key(info: ResourceInfo, namespace: str | None, name: str) -> tuple[str, str, str]:
    return (info.plural, (namespace or "") if info.namespaced else "", name)


class Watch:
    """Async iterator of ``(type, object)`` for one watch; ``close()`` ends it (as a dropped stream)."""

    def __init__(
        self,
        store: ObjectStore,
        resource: str,
        namespace: str | None,
        selector: Selector,
        timeout_s: float | None = None,
    ) -> None:
        self._store = store
        self._resource = resource
        self._namespace = namespace
        self._selector = selector
        self._queue: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        self._timeout_s = timeout_s
        self._deadline: float | None = None
        self.closed = False

    def _offer(self, change: Change) -> None:
        if change.resource != self._resource or (self._namespace and change.namespace != self._namespace):
            return
        event = _as_event(change, self._selector)
        if event is not None:
            self._queue.put_nowait(event)

    def _push(self, event: tuple[str, Obj]) -> None:
        self._queue.put_nowait(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)
            self._store._unsubscribe(self)

    async def aclose(self) -> None:
        self.close()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> tuple[str, Obj]:
        item = await self._next()
        if item is None:
            self.closed = True
            raise StopAsyncIteration
        return item

    async def _next(self) -> tuple[str, Obj] | None:
        """The next queued item; with ``timeout_s`` the stream ends that long after the first read
        (the server-side ``timeoutSeconds`` of a real watch)."""
        if not self._queue.empty() or self._timeout_s is None:
            return await self._queue.get()
        now = asyncio.get_running_loop().time()
        if self._deadline is None:
            self._deadline = now + self._timeout_s
        try:
            return await asyncio.wait_for(self._queue.get(), max(self._deadline - now, 0.0))
        except TimeoutError:
            self.close()
            return None


def _as_event(change: Change, selector: Selector) -> tuple[str, Obj] | None:
    was, now = selector.matches(change.old), selector.matches(change.new)
    if was and now:
        assert change.new is not None
        return ("MODIFIED", copy.deepcopy(change.new))
    if now:
        assert change.new is not None
        return ("ADDED", copy.deepcopy(change.new))
    if was:
        assert change.old is not None
        gone = copy.deepcopy(change.old)
        gone["metadata"]["resourceVersion"] = str(change.rv)
        return ("DELETED", gone)
    return None


class ObjectStore:
    """Objects by (resource, namespace, name), plus history for watches and delete hooks."""

    def __init__(self, history_limit: int = 1000, clock: Clock | None = None) -> None:
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._listed: dict[str, list[tuple[str, str, str]]] = {}
        """Per resource (plural) listed so far, its keys in list order (kept so on every create and delete)."""
        self._shared: dict[str, tuple[Obj, ...]] = {}
        """Per resource (plural), what ``shared`` handed out, until an object of it is written."""
        self._rv = 0
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._compacted_rv = 0  # watches from before this are 410 Gone
        self._watches: list[Watch] = []
        self._delete_hooks: dict[str, list[DeleteHook]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clock: Clock = clock or (lambda: datetime.now(UTC))

    # -- reads -------------------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def info(self, resource: str) -> ResourceInfo:
        try:
            return RESOURCES[resource]
        except KeyError:
            raise NotFound(f"the server could not find the requested resource ({resource})") from None

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        info = self.info(resource)
        obj = self._objects.get(_key(info, namespace, name))
        if obj is None:
            raise NotFound(f'{resource} "{name}" not found')
        return copy.deepcopy(obj)

    def shared(self, resource: str) -> tuple[Obj, ...]:
        """Every stored object of ``resource``, in ``list`` order, *not copied*: for a reader that
        only reads (a controller's watch cache does the same), e.g. the simulator's partitioner. A
        write replaces the stored dict, so an object handed out here never changes under its reader;
        the same tuple is handed out again until an object of ``resource`` is written, so a reader
        may take "the same tuple" for "nothing changed" (``nos.planner.incremental``)."""
        plural = self.info(resource).plural
        out = self._shared.get(plural)
        if out is None:
            objects = self._objects
            out = self._shared[plural] = tuple(map(objects.__getitem__, self._keys(plural)))
        return out

    def _keys(self, plural: str) -> list[tuple[str, str, str]]:
        keys = self._listed.get(plural)
        if keys is None:
            keys = self._listed[plural] = sorted(key for key in self._objects if key[0] == plural)
        return keys

    def list(
        self, resource: str, namespace: str | None = None, selector: Selector | None = None
    ) -> tuple[list[Obj], str]:
        info = self.info(resource)
        sel = selector or Selector()
        matching = (self._objects[key] for key in self._keys(info.plural) if not namespace or key[1] == namespace)
        return [copy.deepcopy(obj) for obj in matching if sel.matches(obj)], self.resource_version

    # -- writes ------------------------------------------------------------------------------------
    def create(self, resource: str, obj: Obj, namespace: str | None = None) -> Obj:
        info = self.info(resource)
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if info.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise BadRequest("the namespace of the provided object does not match the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        name = meta.get("name") or ""
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise Invalid(f'{info.kind} "{name}" is invalid: metadata.name: must be a DNS-1123 subdomain')
        if validator := _VALIDATORS.get(resource):
            validator(new)
        key = _key(info, meta.get("namespace"), name)
        if key in self._objects:
            raise AlreadyExists(f'{resource} "{name}" already exists')
        new["apiVersion"], new["kind"] = info.api_version, info.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        return self._commit(info, key, None, new)

    def merge_patch(
        self,
        resource: str,
        name: str,
        patch: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        """Apply an RFC 7386 patch; ``metadata.resourceVersion`` in the patch is a precondition."""
        if not isinstance(patch, dict):
            raise BadRequest("merge patch must be a JSON object")
        current = self.get(resource, name, namespace)
        self._check_precondition(resource, name, current, patch)
        return self._update(resource, current, merge_patch(current, patch), subresource)

    def replace(
        self,
        resource: str,
        name: str,
        obj: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        """PUT: the body replaces the object; its ``metadata.resourceVersion`` (if set) must be current."""
        current = self.get(resource, name, namespace)
        body_name = (obj.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise BadRequest("the name of the object does not match the name on the URL")
        self._check_precondition(resource, name, current, obj)
        return self._update(resource, current, copy.deepcopy(obj), subresource)

    def delete(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        info = self.info(resource)
        key = _key(info, namespace, name)
        old = self._objects.get(key)
        if old is None:
            raise NotFound(f'{resource} "{name}" not found')
        self._rv += 1
        del self._objects[key]
        self._shared.pop(key[0], None)
        if (keys := self._listed.get(key[0])) is not None:
            del keys[bisect.bisect_left(keys, key)]
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record(Change(self._rv, info.plural, key[1], name, old, None))
        for hook in self._delete_hooks.get(resource, []):
            result = hook(copy.deepcopy(gone))
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return gone

    # -- watch -------------------------------------------------------------------------------------
    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        selector: Selector | None = None,
        resource_version: str | None = None,
        timeout_s: float | None = None,
    ) -> Watch:
        """Start a watch. No/"0" resourceVersion: synthetic ADDED for current objects, then changes;
        otherwise replay retained changes after it, or raise ``Gone`` if they were compacted away.
        ``timeout_s``: the stream ends that long after it is first read."""
        info = self.info(resource)
        sel = selector or Selector()
        w = Watch(self, info.plural, namespace, sel, timeout_s)
        if resource_version in (None, "", "0"):
            for obj in self.list(resource, namespace, sel)[0]:
                w._push(("ADDED", obj))
        else:
            try:
                since = int(resource_version or "0")
            except ValueError:
                raise BadRequest(f"invalid resourceVersion {resource_version!r}") from None
            if since < self._compacted_rv:
                raise Gone(f"too old resource version: {since} ({self._compacted_rv})")
            for change in self._history:
                if change.rv > since:
                    w._offer(change)
        self._watches.append(w)
        return w

    def close_watches(self) -> None:
        """Drop every open watch (as the apiserver does on restart or timeout)."""
        for w in list(self._watches):
            w.close()

    def compact(self) -> None:
        """Forget all history: any watch from an existing resourceVersion now gets 410."""
        self._history.clear()
        self._compacted_rv = self._rv

    # -- hooks -------------------------------------------------------------------------------------
    def on_delete(self, resource: str, hook: DeleteHook) -> None:
        """Call ``hook(obj)`` after each delete of ``resource``; an awaitable result runs as a task
        (e.g. a fake DaemonSet controller recreating a pod after a delay)."""
        self._delete_hooks.setdefault(resource, []).append(hook)

    async def settle(self) -> None:
        """Wait for hook tasks started by deletes (and those they start)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    # -- internals ---------------------------------------------------------------------------------
    def _check_precondition(self, resource: str, name: str, current: Obj, body: Obj) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise Conflict(
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )

    def _update(self, resource: str, current: Obj, new: Obj, subresource: str | None) -> Obj:
        info = self.info(resource)
        if subresource not in (None, "status") or (subresource == "status" and not info.has_status):
            raise NotFound(f"{resource} has no subresource {subresource!r}")
        if subresource == "status":
            merged = copy.deepcopy(current)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif info.has_status:  # main resource writes ignore .status
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            if immutable in old_meta:
                meta[immutable] = old_meta[immutable]
        new["apiVersion"], new["kind"] = info.api_version, info.kind
        meta["generation"] = old_meta.get("generation", 1) + (new.get("spec") != current.get("spec"))
        if validator := _VALIDATORS.get(resource):
            validator(new)
        return self._commit(info, _key(info, meta.get("namespace"), meta["name"]), current, new)

    def _commit(self, info: ResourceInfo, key: tuple[str, str, str], old: Obj | None, new: Obj) -> Obj:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        if old is None and (keys := self._listed.get(key[0])) is not None:
            bisect.insort(keys, key)
        self._objects[key] = new
        self._shared.pop(key[0], None)
        self._record(Change(self._rv, info.plural, key[1], key[2], old, new))
        return copy.deepcopy(new)

    def _record(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self._compacted_rv = self._history.popleft().rv
        for w in list(self._watches):
            w._offer(change)

    def _unsubscribe(self, w: Watch) -> None:
        if w in self._watches:
            self._watches.remove(w)
