from __future__ import annotations

from typing import Any

import grpc
import pytest

from nos.agent.podresources import PodResourcesClient, PodResourcesError, messages
from nos.agent.reconcile import allocated_ids
from tests.agent.fake_kubelet import FakeKubelet


def test_list_and_allocatable_over_a_real_unix_socket(kubelet: FakeKubelet) -> None:
    kubelet.allocations[("ml", "train-0", "main")] = {
        "nvidia.com/mig-1g.10gb": ["MIG-a"],
        "cpu-ish/x": ["c1"],
    }
    kubelet.allocations[("ml", "train-1", "main")] = {"nvidia.com/mig-1g.10gb": ["MIG-b"]}
    kubelet.allocations[("ml", "train-1", "side")] = {"nvidia.com/mig-3g.40gb": ["MIG-c"]}
    kubelet.allocatable = {
        "nvidia.com/mig-1g.10gb": ["MIG-a", "MIG-b", "MIG-d"],
        "nvidia.com/mig-3g.40gb": ["MIG-c"],
    }
    client = PodResourcesClient(kubelet.socket_path)

    assert client.list()[("ml", "train-1", "side")] == {"nvidia.com/mig-3g.40gb": {"MIG-c"}}
    assert client.allocated() == {
        "nvidia.com/mig-1g.10gb": {"MIG-a", "MIG-b"},
        "nvidia.com/mig-3g.40gb": {"MIG-c"},
        "cpu-ish/x": {"c1"},
    }
    assert client.allocatable()["nvidia.com/mig-1g.10gb"] == {"MIG-a", "MIG-b", "MIG-d"}
    assert allocated_ids(client.allocated()) == {"MIG-a", "MIG-b", "MIG-c", "c1"}
    assert kubelet.calls == ["List", "List", "GetAllocatableResources", "List"]


def test_nothing_allocated(kubelet: FakeKubelet) -> None:
    assert PodResourcesClient(kubelet.socket_path).allocated() == {}


def test_rpc_failure_and_missing_socket_raise(kubelet: FakeKubelet) -> None:
    kubelet.fail = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(PodResourcesError, match="UNAVAILABLE"):
        PodResourcesClient(kubelet.socket_path).allocated()
    with pytest.raises(PodResourcesError):
        PodResourcesClient(kubelet.socket_path + ".missing", timeout_s=0.5).allocated()


def test_runtime_messages_parse_kubelet_fields_we_do_not_declare() -> None:
    """Fields of the real proto we left out (cpu_ids = 3, topology = 3 in ContainerDevices) are skipped."""
    m = messages()
    full: Any = m["ContainerResources"](name="c")
    full.devices.add(resource_name="nvidia.com/mig-1g.10gb", device_ids=["MIG-x"])
    extra = b"\x1a\x02\x01\x02"  # field 3 (cpu_ids, packed int64) of ContainerResources
    parsed: Any = m["ContainerResources"].FromString(full.SerializeToString() + extra)
    assert list(parsed.devices[0].device_ids) == ["MIG-x"]
