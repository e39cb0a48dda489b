"""A stateful fake kube-apiserver over real HTTP on 127.0.0.1 (aiohttp), for adapter tests.

The real lightkube client talks to it, so URL building, query encoding, patch content types, JSON
(de)serialisation and error bodies are all exercised. Object semantics come from
``nos.kube.fake.store.ObjectStore`` (shared with ``MemoryKube``); this module adds the REST mapping, the
watch stream (chunked JSON lines, ``timeoutSeconds``, in-stream 410 ERROR), bearer-token auth, and
fault hooks (next N requests fail with a status, are delayed, or watches are dropped).

Modelled resources: Nodes, Pods (both with ``/status``), events.k8s.io/v1 Events,
coordination.k8s.io/v1 Leases. See docs/kubernetes.md for what is not modelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nos.kube.fake.selectors import Selector, SelectorError
from nos.kube.fake.store import AlreadyExists, BadRequest, Gone, ObjectStore, ResourceInfo
from nos.kube.port import KubeError, Obj

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def status_body(code: int, message: str, reason: str | None = None) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with the apiserver's exact Content-Type: lightkube only parses error bodies (into
    ``ApiError``) when the header is exactly ``application/json``, without a charset."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(body).encode(), status=status, headers=all_headers)


def _error(code: int, message: str, reason: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status_body(code, message, reason), status=code, headers=headers)


def _kube_error(err: KubeError) -> web.Response:
    reason = "AlreadyExists" if isinstance(err, AlreadyExists) else None
    return _error(err.status or 500, str(err), reason)


@dataclass
class Fault:
    """Applies to the next ``times`` requests whose path matches ``path`` (a regex, searched)."""

    path: str
    times: int
    status: int | None = None
    delay: float = 0.0
    method: str | None = None
    retry_after: float | None = None

    def matches(self, request: web.Request) -> bool:
        if self.method and request.method != self.method.upper():
            return False
        return re.search(self.path, request.path) is not None


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int = 0


def _contains_list(value: Any) -> bool:
    if isinstance(value, list):
        return True
    if isinstance(value, dict):
        return any(_contains_list(v) for v in value.values())
    return False


def _json_pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise BadRequest(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(target: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 subset: add, remove, replace, test (what controllers use for annotations/labels)."""
    doc = copy.deepcopy(target)
    for op in ops:
        *parents, last = _json_pointer(op.get("path", ""))
        cur: Any = doc
        for p in parents:
            cur = cur[int(p)] if isinstance(cur, list) else cur.get(p)
            if cur is None:
                raise KubeError(f"json patch path {op['path']} does not exist", 422)
        kind = op.get("op")
        if kind == "test":
            actual = cur[int(last)] if isinstance(cur, list) else cur.get(last)
            if actual != op.get("value"):
                raise KubeError(f"json patch test failed at {op['path']}", 422)
        elif kind in ("add", "replace"):
            if kind == "replace" and isinstance(cur, dict) and last not in cur:
                raise KubeError(f"json patch replace of missing {op['path']}", 422)
            if isinstance(cur, list):
                idx = len(cur) if last == "-" else int(last)
                if kind == "add":
                    cur.insert(idx, op.get("value"))
                else:
                    cur[idx] = op.get("value")
            else:
                cur[last] = op.get("value")
        elif kind == "remove":
            try:
                del cur[int(last) if isinstance(cur, list) else last]
            except (KeyError, IndexError):
                raise KubeError(f"json patch remove of missing {op['path']}", 422) from None
        else:
            raise BadRequest(f"unsupported json patch op {kind!r}")
    return doc


@dataclass
class _Route:
    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class FakeApiServer:
    """Start with ``await server.start()``; ``url`` is then ``http://127.0.0.1:<port>``."""

    store: ObjectStore = field(default_factory=ObjectStore)
    token: str = "dummy-token"
    requests: list[RequestRecord] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _streams: set[asyncio.Task[Any]] = field(default_factory=set)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(self) -> Obj:
        """A kubeconfig dict for lightkube's ``KubeConfig.from_dict`` (a user is required)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
        }

    # -- fault hooks -------------------------------------------------------------------------------
    def fail_next(
        self,
        path: str,
        status: int,
        times: int = 1,
        method: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """The next ``times`` requests to ``path`` (regex) answer ``status`` without touching state."""
        self.faults.append(Fault(path, times, status=status, method=method, retry_after=retry_after))

    def delay_next(self, path: str, seconds: float, times: int = 1, method: str | None = None) -> None:
        self.faults.append(Fault(path, times, delay=seconds, method=method))

    def drop_watches(self) -> None:
        """End every open watch stream cleanly (clients must re-watch from their last RV)."""
        self.store.close_watches()

    def count(self, method: str, path: str) -> int:
        """How many requests matched ``method`` and ``path`` (regex) — to assert retries."""
        return sum(1 for r in self.requests if r.method == method and re.search(path, r.path))

    # -- HTTP --------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        record = RequestRecord(request.method, request.path, dict(request.query), request.content_type)
        self.requests.append(record)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            record.status = 401
            return _error(401, "Unauthorized")
        for fault in list(self.faults):
            if fault.matches(request):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                    record.status = fault.status
                    return _error(fault.status, f"injected fault {fault.status}", headers=headers)
                break
        response: web.StreamResponse = await handler(request)
        record.status = response.status
        return response

    def _route(self, path: str) -> _Route | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            api_version, rest = parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        try:
            info = self.store.info(rest[0])
        except KubeError:
            return None
        if info.api_version != api_version or (namespace is not None and not info.namespaced):
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return _Route(info, namespace, name, sub)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = self._route(request.path)
        if route is None:
            return _error(404, f"the server could not find the requested resource {request.path}")
        try:
            if route.name is None:
                if request.method == "GET":
                    if request.query.get("watch") in ("true", "1"):
                        return await self._watch(request, route)
                    return self._list(request, route)
                if request.method == "POST":
                    return await self._create(request, route)
                return _error(405, f"{request.method} not allowed on a collection")
            return await self._item(request, route)
        except SelectorError as err:
            return _error(400, str(err))
        except KubeError as err:
            return _kube_error(err)

    def _list(self, request: web.Request, route: _Route) -> web.Response:
        selector = Selector.parse(
            route.info.plural, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        items, rv = self.store.list(route.info.plural, route.namespace, selector)
        version = route.info.api_version
        return json_response(
            {
                "apiVersion": version,
                "kind": f"{route.info.kind}List",
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _body(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadRequest(f"invalid JSON body: {err}") from None

    async def _create(self, request: web.Request, route: _Route) -> web.Response:
        if route.info.namespaced and route.namespace is None:
            return _error(405, "create of a namespaced resource needs a namespace in the path")
        body = await self._body(request)
        if not isinstance(body, dict):
            raise BadRequest("body must be an object")
        created = self.store.create(route.info.plural, body, route.namespace)
        return json_response(created, status=201)

    async def _item(self, request: web.Request, route: _Route) -> web.Response:
        plural, name, ns, sub = route.info.plural, route.name, route.namespace, route.subresource
        assert name is not None
        if route.info.namespaced and ns is None:
            return _error(404, "namespaced resource needs a namespace in the path")
        if sub is not None and (sub != "status" or not route.info.has_status):
            return _error(404, f"subresource {sub!r} not found")
        if request.method == "GET":
            return json_response(self.store.get(plural, name, ns))
        if request.method == "DELETE":
            if sub is not None:
                return _error(405, "cannot delete a subresource")
            return json_response(self.store.delete(plural, name, ns))
        if request.method == "PUT":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise BadRequest("body must be an object")
            return json_response(self.store.replace(plural, name, body, ns, subresource=sub))
        if request.method == "PATCH":
            return json_response(await self._patch(request, route))
        return _error(405, f"{request.method} not allowed")

    async def _patch(self, request: web.Request, route: _Route) -> Obj:
        plural, name, ns, sub = route.info.plural, route.name, route.namespace, route.subresource
        assert name is not None
        ctype = request.content_type
        body = await self._body(request)
        if ctype == MERGE or (ctype == STRATEGIC and not _contains_list(body)):
            return self.store.merge_patch(plural, name, body, ns, subresource=sub)
        if ctype == STRATEGIC:
            raise KubeError("fake apiserver: strategic merge of lists is not modelled", 415)
        if ctype == JSON_PATCH:
            if not isinstance(body, list):
                raise BadRequest("json patch must be a list")
            current = self.store.get(plural, name, ns)
            patched = apply_json_patch(current, body)
            # JSON patch carries no RV precondition by itself (a `test` op can provide one).
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.store.replace(plural, name, patched, ns, subresource=sub)
        raise KubeError(f"the body of the request was in an unknown format ({ctype})", 415)

    async def _watch(self, request: web.Request, route: _Route) -> web.StreamResponse:
        selector = Selector.parse(
            route.info.plural, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watch = self.store.watch(route.info.plural, route.namespace, selector, request.query.get("resourceVersion"))
        except Gone as err:
            await response.prepare(request)
            await self._send(response, "ERROR", status_body(410, str(err), "Expired"))
            await response.write_eof()
            return response
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    kind, obj = await asyncio.wait_for(anext(watch), remaining)
                except (TimeoutError, StopAsyncIteration):
                    break
                await self._send(response, kind, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            watch.close()
            raise
        finally:
            watch.close()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, kind: str, obj: Obj) -> None:
        line = json.dumps({"type": kind, "object": obj}) + "\n"
        await response.write(line.encode())
