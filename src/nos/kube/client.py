"""``Kube`` over HTTP with lightkube's ``AsyncClient`` (see docs/kubernetes.md for why lightkube).

Objects come back as plain dicts (``to_dict()`` of lightkube's models, i.e. the API's JSON shape), every
lightkube/httpx error is turned into the port's ``KubeError``/``NotFound``/``Conflict``, and calls are
retried with capped exponential backoff on 429, 5xx and transport errors. Every call here is safe to
retry: gets/lists read; a merge patch is idempotent (and with a resourceVersion precondition a replay
can only end in Conflict, never in a stale write); a delete that lands and is then replayed reports
404 only on the replay, which counts as success; an Event has a fixed name, so a replayed create that
finds it (409) counts as success. Creates and replaces of other objects are not retried: a replay
could not tell its own success from a rival's (the caller, e.g. the leader elector, retries).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient, KubeConfig
from lightkube.operators import Operator
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.events_v1 import Event as EventResource
from lightkube.types import PatchType

from nos.kube.events import EventSeries
from nos.kube.port import Conflict, Event, Gone, KubeError, NotFound, Obj, ObjList, Resource, WatchEvent

_KINDS: dict[str, Any] = {"nodes": Node, "pods": Pod, "leases": Lease}
"""Resource name → lightkube class (Any: lightkube's overloads cannot take a union of classes)."""


def _as_obj(model: Any) -> Obj:
    """A lightkube model as the API's JSON dict."""
    return cast(Obj, model.to_dict())


def _namespace(kind: Any, namespace: str | None, listing: bool = False) -> str | None:
    """Nodes are cluster-scoped; a list over namespaced kinds without a namespace spans them all."""
    if kind is Node:
        return None
    return (namespace or ALL_NS) if listing else namespace


T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class _RawSelector(Operator[str]):
    """Passes a selector string through lightkube's dict-based selector builder unchanged.

    The port takes kubectl-style selector strings; lightkube only builds them from dicts. Used as
    ``{"": _RawSelector(s)}``: ``build_selector`` calls ``encode(key)`` once and joins the result.
    """

    def __init__(self, selector: str) -> None:
        # op_name "equal" passes lightkube's check of allowed field-selector operators.
        super().__init__("equal", "", selector)

    def encode(self, key: str) -> str:
        return self.value


def _selector(selector: str | None) -> dict[str, Any] | None:
    return {"": _RawSelector(selector)} if selector else None


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; ``Retry-After`` is honoured up to ``max_delay``."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def to_kube_error(exc: Exception) -> KubeError:
    """Map lightkube/httpx errors to the port's exceptions (status 0 = no HTTP answer)."""
    if isinstance(exc, ApiError):
        code = int(exc.status.code or exc.response.status_code)
        message = exc.status.message or str(exc)
        if code == 404:
            return NotFound(message)
        if code == 409:
            return Conflict(message)
        if code == 410:
            return Gone(message)
        return KubeError(message, code)
    if isinstance(exc, httpx2.HTTPStatusError):  # non-JSON error body (a proxy, a load balancer)
        code = exc.response.status_code
        if code == 404:
            return NotFound(str(exc))
        if code == 409:
            return Conflict(str(exc))
        return KubeError(str(exc), code)
    if isinstance(exc, KubeError):
        return exc
    return KubeError(f"{type(exc).__name__}: {exc}", 0)


def _retry_after(exc: Exception) -> float | None:
    if isinstance(exc, httpx2.HTTPStatusError):
        value = exc.response.headers.get("Retry-After")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None
    return None


def _retryable(err: KubeError) -> bool:
    return err.status in RETRYABLE_STATUSES or err.status == 0


class LightkubeKube:
    """The production ``Kube``: one lightkube ``AsyncClient`` shared by all calls.

    ``component`` names the reporting controller of Events (``nos.nebuly.com/<component>``),
    ``instance`` the reporting instance (default ``<component>-<hostname>``, i.e. the pod name).
    """

    def __init__(
        self,
        client: AsyncClient,
        component: str = "agent",
        instance: str | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._client = client
        self.component = component
        self.instance = instance or f"{component}-{socket.gethostname()}"
        self._series = EventSeries()
        self._retry = retry or RetryPolicy()
        self._clock = clock or (lambda: datetime.now(UTC))

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> LightkubeKube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, op: Callable[[], Awaitable[T]], *, replay_ok: int | None = None) -> T | None:
        """Run ``op`` with retries. ``replay_ok``: a status that, seen on a retry, means an earlier
        attempt already succeeded (returns None)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await op()
            except (ApiError, httpx2.HTTPError) as exc:
                err = to_kube_error(exc)
                if attempt > 1 and replay_ok is not None and err.status == replay_ok:
                    return None
                if not _retryable(err) or attempt >= self._retry.attempts:
                    raise err from exc
                await self._retry.sleep(self._retry.delay(attempt, _retry_after(exc)))

    async def _must(self, op: Callable[[], Awaitable[T]]) -> T:
        result = await self._call(op)
        assert result is not None
        return result

    # -- Kube --------------------------------------------------------------------------------------
    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        kind = _KINDS[resource]
        obj = await self._must(lambda: self._client.get(kind, name, namespace=_namespace(kind, namespace)))
        return _as_obj(obj)

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjList:
        return (await self.list_with_version(resource, namespace, label_selector, field_selector))[0]

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        model = _model(resource, obj)
        return _as_obj(await self._once(lambda: self._client.create(model)))

    async def replace(self, resource: Resource, obj: Obj) -> Obj:
        model = _model(resource, obj)
        return _as_obj(await self._once(lambda: self._client.replace(model)))

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        kind = _KINDS[resource]
        ns = _namespace(kind, namespace)
        obj = await self._must(lambda: self._client.patch(kind, name, patch, namespace=ns, patch_type=PatchType.MERGE))
        return _as_obj(obj)

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> None:
        kind = _KINDS[resource]
        await self._call(lambda: self._client.delete(kind, name, namespace=_namespace(kind, namespace)), replay_ok=404)

    async def create_event(self, event: Event) -> None:
        async def patch(name: str, namespace: str, body: Obj) -> None:
            await self._call(
                lambda: self._client.patch(EventResource, name, body, namespace=namespace, patch_type=PatchType.MERGE)
            )

        async def create(body: Obj) -> None:
            # from_dict is annotated as returning DictMixin; it returns the class it is called on.
            resource = cast(EventResource, EventResource.from_dict(body))
            await self._call(lambda: self._client.create(resource), replay_ok=409)

        await self._series.send(event, self._clock(), self.component, self.instance, patch, create)

    async def list_with_version(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[ObjList, str]:
        kind = _KINDS[resource]

        async def op() -> tuple[ObjList, str]:
            listing = self._client.list(
                kind,
                namespace=_namespace(kind, namespace, listing=True),
                labels=_selector(label_selector),
                fields=_selector(field_selector),
            )
            items = [o.to_dict() async for o in listing]
            return items, listing.resourceVersion

        return await self._must(op)

    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_s: int | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """lightkube re-watches by itself from the last version when the server ends a stream, so this
        stream only ends on an error (410 → ``Gone``); no retries here, the caller backs off."""
        kind = _KINDS[resource]
        stream = self._client.watch(
            kind,
            namespace=_namespace(kind, namespace, listing=True),
            labels=_selector(label_selector),
            fields=_selector(field_selector),
            resource_version=resource_version,
            server_timeout=timeout_s,
        )
        try:
            async for kind_, obj in stream:
                yield kind_, obj.to_dict()
        except (ApiError, httpx2.HTTPError) as exc:
            raise to_kube_error(exc) from exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _once(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (ApiError, httpx2.HTTPError) as exc:
            raise to_kube_error(exc) from exc


def _model(resource: Resource, body: Obj) -> Any:
    """The lightkube model of ``body``. A Lease's MicroTime fields with a zero microsecond get 1 µs:
    lightkube's encoder drops a zero fraction and the apiserver's MicroTime parser needs six digits
    (as for Events)."""
    model = _KINDS[resource].from_dict(body)
    spec = model.spec if isinstance(model, Lease) else None
    if spec is not None:
        for attr in ("acquireTime", "renewTime"):
            value = getattr(spec, attr)
            if isinstance(value, datetime) and value.microsecond == 0:
                setattr(spec, attr, value.replace(microsecond=1))
    return model


def load_config(path: str | None = None) -> KubeConfig:
    """``path`` → that kubeconfig; None → in-cluster service account when running in a pod
    (KUBERNETES_SERVICE_HOST set), else ``$KUBECONFIG`` / ``~/.kube/config``."""
    if path:
        return KubeConfig.from_file(path)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubeConfig.from_service_account()
    return KubeConfig.from_env()


def from_kubeconfig(
    path: str | None = None,
    *,
    component: str = "agent",
    instance: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float = 10.0,
) -> LightkubeKube:
    """Build a ``LightkubeKube`` from a kubeconfig file or the in-cluster config (see ``load_config``)."""
    client = AsyncClient(load_config(path), timeout=httpx2.Timeout(timeout))
    return LightkubeKube(client, component=component, instance=instance, retry=retry)
