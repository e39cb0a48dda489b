"""A fake kubelet serving PodResources v1 over real gRPC on a unix socket (test double)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from nos.agent.podresources import SERVICE, messages

Allocations = Mapping[tuple[str, str, str], Mapping[str, list[str]]]
"""(namespace, pod, container) -> resource -> device ids."""


class FakeKubelet:
    """Serves whatever ``allocations`` / ``allocatable`` hold at call time; ``fail`` makes RPCs abort."""

    def __init__(self) -> None:
        self.allocations: dict[tuple[str, str, str], dict[str, list[str]]] = {}
        self.allocatable: dict[str, list[str]] = {}
        self.fail: grpc.StatusCode | None = None
        self.calls: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="kubelet")  # short path: unix sockets max ~107 chars
        self.socket_path = str(Path(self._dir.name) / "kubelet.sock")
        m = messages()
        handlers = {
            "List": grpc.unary_unary_rpc_method_handler(
                self._list,
                request_deserializer=m["ListPodResourcesRequest"].FromString,
                response_serializer=lambda r: r.SerializeToString(),
            ),
            "GetAllocatableResources": grpc.unary_unary_rpc_method_handler(
                self._allocatable,
                request_deserializer=m["AllocatableResourcesRequest"].FromString,
                response_serializer=lambda r: r.SerializeToString(),
            ),
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self._server.add_insecure_port(f"unix://{self.socket_path}")

    def start(self) -> FakeKubelet:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(None)
        self._dir.cleanup()

    def _check(self, name: str, context: Any) -> None:
        self.calls.append(name)
        if self.fail is not None:
            context.abort(self.fail, "injected failure")

    def _list(self, request: Any, context: Any) -> Any:
        self._check("List", context)
        m = messages()
        resp: Any = m["ListPodResourcesResponse"]()
        for (ns, pod, container), per_resource in sorted(self.allocations.items()):
            p = next((p for p in resp.pod_resources if p.namespace == ns and p.name == pod), None)
            if p is None:
                p = resp.pod_resources.add(name=pod, namespace=ns)
            c = p.containers.add(name=container)
            for resource, ids in sorted(per_resource.items()):
                c.devices.add(resource_name=resource, device_ids=ids)
        return resp

    def _allocatable(self, request: Any, context: Any) -> Any:
        self._check("GetAllocatableResources", context)
        resp: Any = messages()["AllocatableResourcesResponse"]()
        for resource, ids in sorted(self.allocatable.items()):
            resp.devices.add(resource_name=resource, device_ids=ids)
        return resp
