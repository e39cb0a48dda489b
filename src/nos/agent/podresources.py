"""Which devices kubelet has allocated to containers: the PodResources v1 API over its unix socket.

No PyPI package ships the PodResources stubs and generating them needs the upstream ``api.proto``
with its gogo options stripped, so the few messages the agent reads are declared here at runtime:
a ``FileDescriptorProto`` built with ``descriptor_pb2``, added to a private ``DescriptorPool`` and
turned into classes with ``message_factory.GetMessageClass``. Methods are called with
``channel.unary_unary("/v1.PodResourcesLister/<Method>")`` and the classes' ``SerializeToString`` /
``FromString``. Field numbers and names are those of
``k8s.io/kubelet/pkg/apis/podresources/v1/api.proto``; fields the agent does not need (cpu_ids,
memory, topology, dynamic_resources) are left out and skipped by the parser as unknown fields.

Declared (package ``v1``)::

    ListPodResourcesRequest {}
    ListPodResourcesResponse     { repeated PodResources pod_resources = 1; }
    PodResources                 { string name = 1; string namespace = 2;
                                   repeated ContainerResources containers = 3; }
    ContainerResources           { string name = 1; repeated ContainerDevices devices = 2; }
    ContainerDevices             { string resource_name = 1; repeated string device_ids = 2; }
    AllocatableResourcesRequest {}
    AllocatableResourcesResponse { repeated ContainerDevices devices = 1; }
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # grpcio and protobuf are the ``agent`` extra: imported when a client is used
    import grpc
    from google.protobuf.message import Message

EXTRA_HINT = "the MIG agent needs the 'agent' extra: pip install 'nos[agent]'"

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
SERVICE = "v1.PodResourcesLister"
LIST_METHOD = f"/{SERVICE}/List"
ALLOCATABLE_METHOD = f"/{SERVICE}/GetAllocatableResources"

_MESSAGES: dict[str, list[tuple[str, int, str, str | None]]] = {
    # name -> [(field, number, FieldDescriptorProto type, message type for TYPE_MESSAGE)]; every
    # field below is repeated unless it is a string scalar listed with a trailing "?".
    "ListPodResourcesRequest": [],
    "ListPodResourcesResponse": [("pod_resources", 1, "TYPE_MESSAGE", ".v1.PodResources")],
    "PodResources": [
        ("name?", 1, "TYPE_STRING", None),
        ("namespace?", 2, "TYPE_STRING", None),
        ("containers", 3, "TYPE_MESSAGE", ".v1.ContainerResources"),
    ],
    "ContainerResources": [
        ("name?", 1, "TYPE_STRING", None),
        ("devices", 2, "TYPE_MESSAGE", ".v1.ContainerDevices"),
    ],
    "ContainerDevices": [
        ("resource_name?", 1, "TYPE_STRING", None),
        ("device_ids", 2, "TYPE_STRING", None),
    ],
    "AllocatableResourcesRequest": [],
    "AllocatableResourcesResponse": [("devices", 1, "TYPE_MESSAGE", ".v1.ContainerDevices")],
}


class PodResourcesError(Exception):
    """kubelet could not be asked (socket missing, RPC failed): what is in use is unknown."""


@cache
def messages() -> dict[str, type[Message]]:
    """The PodResources message classes by name (built once, in a private descriptor pool)."""
    descriptor_pb2, descriptor_pool, message_factory = _protobuf()
    fd = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="nos/podresources/v1/api.proto", package="v1", syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            scalar = fname.endswith("?")
            field = msg.field.add(
                name=fname.rstrip("?"),
                number=number,
                type=getattr(fd, ftype),
                label=fd.LABEL_OPTIONAL if scalar else fd.LABEL_REPEATED,
            )
            if type_name is not None:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"v1.{name}")) for name in _MESSAGES}


def _protobuf() -> tuple[Any, Any, Any]:
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError as e:
        raise PodResourcesError(f"{EXTRA_HINT} ({e})") from e
    return descriptor_pb2, descriptor_pool, message_factory


def _grpc() -> Any:
    try:
        import grpc
    except ImportError as e:
        raise PodResourcesError(f"{EXTRA_HINT} ({e})") from e
    return grpc


def _devices(entries: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in entries:
        out.setdefault(d.resource_name, set()).update(d.device_ids)
    return out


class PodResourcesSource(Protocol):
    """What the agent needs from kubelet; raises ``PodResourcesError`` when it cannot tell."""

    def allocated(self) -> dict[str, set[str]]: ...


class PodResourcesClient:
    """Synchronous client (the agent calls it from its NVML worker thread, like NVML itself)."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def _call(self, method: str, request: str, response: str) -> Any:
        m = messages()
        grpc = _grpc()
        # A fresh channel per call: kubelet re-creates the socket on restart (new inode), and the
        # agent asks rarely, so a long-lived channel would only add reconnect edge cases.
        try:
            with grpc.insecure_channel(f"unix://{self.socket_path}") as channel:
                rpc = channel.unary_unary(
                    method, request_serializer=_serialize, response_deserializer=m[response].FromString
                )
                return rpc(m[request](), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise PodResourcesError(f"kubelet PodResources {method} on {self.socket_path}: {_describe(e)}") from e

    def list(self) -> Mapping[tuple[str, str, str], dict[str, set[str]]]:
        """(namespace, pod, container) -> resource -> device ids allocated to it."""
        resp = self._call(LIST_METHOD, "ListPodResourcesRequest", "ListPodResourcesResponse")
        out: dict[tuple[str, str, str], dict[str, set[str]]] = {}
        for pod in resp.pod_resources:
            for c in pod.containers:
                out[(pod.namespace, pod.name, c.name)] = _devices(c.devices)
        return out

    def allocated(self) -> dict[str, set[str]]:
        """resource -> every device id allocated to some container (MIG UUIDs for ``nvidia.com/mig-*``)."""
        out: dict[str, set[str]] = {}
        for per_resource in self.list().values():
            for resource, ids in per_resource.items():
                out.setdefault(resource, set()).update(ids)
        return out

    def allocatable(self) -> dict[str, set[str]]:
        """resource -> every device id kubelet knows from the device plugins."""
        resp = self._call(ALLOCATABLE_METHOD, "AllocatableResourcesRequest", "AllocatableResourcesResponse")
        return _devices(resp.devices)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _describe(e: grpc.RpcError) -> str:
    grpc = _grpc()
    code = e.code() if isinstance(e, grpc.Call) else None
    details = e.details() if isinstance(e, grpc.Call) else None
    return f"{code.name if code else 'error'}: {details or e}"
