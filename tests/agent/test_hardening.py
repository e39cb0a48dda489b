"""Issue 10 findings 1, 6 and 7 on the agent: in-use detection that fails safe, one bad GPU never
stops the others, truthful status, a deadline on NVML calls, liveness tied to progress, one Event
per change. GPUs are ``SimulatedNvml`` (faults injected by a subclass), kubelet the real-gRPC fake."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import pytest

from nos.agent.agent import MigAgent
from nos.agent.podresources import PodResourcesClient
from nos.agent.runner import AgentRunner
from nos.config import AgentConfig, ServerConfig
from nos.contract.annotations import decode_status, encode_spec, encode_status
from nos.gpu.port import GpuInstanceInfo, NvmlError
from nos.gpu.simulated import SimulatedNvml
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance
from nos.runtime.manager import Manager
from tests.agent.fake_kubelet import FakeKubelet
from tests.agent.helpers import annotations_of, node, provision
from tests.runtime.helpers import eventually

WHOLE = encode_spec({0: [Instance(0, "7g.80gb")]}, "p2")


class FaultyNvml(SimulatedNvml):
    """NVML's rules, plus a GPU that is lost (every read fails) or a call that never returns."""

    lost: set[int]
    hang: threading.Event | None

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        if gpu in getattr(self, "lost", set()):
            raise NvmlError(f"GPU {gpu} is lost", 15)
        hang = getattr(self, "hang", None)
        if hang is not None:
            hang.wait(10)
        return super().gpu_instances(gpu)


def faulty(gpus: int = 1) -> FaultyNvml:
    nvml = FaultyNvml()
    for _ in range(gpus):
        nvml.add_gpu("A100-80GB")
    nvml.lost, nvml.hang = set(), None
    return nvml


def agent(
    nvml: SimulatedNvml, annotations: dict[str, str], kubelet: FakeKubelet | None = None, **cfg: object
) -> tuple[MigAgent, MemoryKube]:
    kube = MemoryKube()
    kube.add_node(node(annotations=annotations))
    pr = PodResourcesClient(kubelet.socket_path) if kubelet else None
    config = AgentConfig.model_validate({"restart_device_plugin": False, **cfg})
    return MigAgent("n1", nvml, kube, pr, config), kube


# -- finding 1: allocated ids that are not MIG UUIDs ----------------------------------------------


@pytest.mark.parametrize("advertised", [True, False])
async def test_index_device_ids_make_every_instance_count_as_in_use(kubelet: FakeKubelet, advertised: bool) -> None:
    """With --device-id-strategy=index kubelet says ``0:0``, not the MIG UUID: the allocated but idle
    instance was taken for free and destroyed for the new layout. Now nothing is destroyed."""
    nvml = SimulatedNvml.new("A100-80GB")
    provision(nvml, 0, "1g.10gb", 0)
    provision(nvml, 0, "1g.10gb", 1)
    kubelet.allocations[("ml", "train", "c")] = {"nvidia.com/mig-1g.10gb": ["0:0"]}
    if advertised:
        kubelet.allocatable["nvidia.com/mig-1g.10gb"] = ["0:0", "0:1"]
    a, kube = agent(nvml, WHOLE, kubelet)

    result = await a.reconcile_once()

    assert not [o for o in result.ops if o.kind == "destroy"]
    assert not any(line.startswith("destroy") for line in nvml.log)
    assert nvml.layout(0) == (Instance(0, "1g.10gb"), Instance(1, "1g.10gb"))
    [event] = [e for e in kube.events if e.reason == "UnknownAllocatedDevices"]
    assert "0:0" in event.note and "--device-id-strategy=index" in event.note and event.type == "Warning"
    assert all(i.used for i in decode_status(annotations_of(kube)).gpus[0].placements or ())
    await a.reconcile_once()  # the same cause is not announced again
    assert [e.reason for e in kube.events].count("UnknownAllocatedDevices") == 1

    kubelet.allocations.clear()  # the pod ended: nothing allocated, the layout is reached
    await a.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "7g.80gb"),)


async def test_uuid_ids_keep_precise_in_use_detection(kubelet: FakeKubelet) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    used = provision(nvml, 0, "3g.40gb", 0)
    provision(nvml, 0, "3g.40gb", 4)
    kubelet.allocations[("ml", "p", "c")] = {"nvidia.com/mig-3g.40gb": list(used.device_uuids)}
    kubelet.allocations[("ml", "q", "c")] = {"nvidia.com/gpu": ["GPU-not-mig"]}  # not a MIG resource
    a, kube = agent(nvml, encode_spec({0: [Instance(0, "3g.40gb"), Instance(4, "2g.20gb")]}, "p"), kubelet)
    await a.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "3g.40gb"), Instance(4, "2g.20gb"))
    assert "UnknownAllocatedDevices" not in [e.reason for e in kube.events]


async def test_fresh_check_before_destroy_sees_an_index_id_allocated_since_planning(kubelet: FakeKubelet) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    gi = provision(nvml, 0, "1g.10gb", 0)
    a, _ = agent(nvml, WHOLE, kubelet)
    kubelet.allocations[("ml", "p", "c")] = {"nvidia.com/mig-1g.10gb": ["0:0"]}
    assert a._in_use_now(0, gi.gi_id) is True
    kubelet.allocations.clear()
    assert a._in_use_now(0, gi.gi_id) is False


# -- finding 6: per-GPU isolation, truthful status, NVML deadline, liveness -----------------------


async def test_a_lost_gpu_is_reported_unreadable_and_the_others_are_reconciled() -> None:
    nvml = faulty(gpus=2)
    provision(nvml, 0, "7g.80gb", 0)
    old_status = encode_status({0: [Instance(0, "7g.80gb")]}, "p1")
    spec = encode_spec({0: [Instance(0, "3g.40gb")], 1: [Instance(0, "7g.80gb")]}, "p2")
    a, kube = agent(nvml, {**spec, **old_status})
    nvml.lost.add(0)

    result = await a.reconcile_once()

    assert nvml.layout(1) == (Instance(0, "7g.80gb"),)  # GPU 1 reconciled
    assert nvml.layout(0) == (Instance(0, "7g.80gb"),)  # GPU 0 left alone
    status = decode_status(annotations_of(kube))
    assert sorted(status.gpus) == [1] and "lost" in status.unreadable[0]
    assert "nos.nebuly.com/status-gpu-0-7g.80gb-free" not in annotations_of(kube)  # not its last layout
    assert [e.reason for e in kube.events] == ["GpuUnreadable"]
    assert any("cannot read GPU 0" in n for n in result.notes)

    nvml.lost.clear()  # the GPU is back: reported again, the error key removed
    await a.reconcile_once()
    status = decode_status(annotations_of(kube))
    assert status.unreadable == {} and sorted(status.gpus) == [0, 1]


async def test_allocated_device_on_an_unreadable_gpu_blocks_every_destroy(kubelet: FakeKubelet) -> None:
    nvml = faulty(gpus=2)
    lost_used = provision(nvml, 0, "1g.10gb", 0)
    provision(nvml, 1, "1g.10gb", 0)
    kubelet.allocations[("ml", "p", "c")] = {"nvidia.com/mig-1g.10gb": list(lost_used.device_uuids)}
    nvml.lost.add(0)
    a, _ = agent(nvml, encode_spec({0: [], 1: [Instance(0, "7g.80gb")]}, "p"), kubelet)
    await a.reconcile_once()
    assert nvml.layout(1) == (Instance(0, "1g.10gb"),)  # cannot tell where the device is: kept


async def test_nvml_list_failure_reports_every_known_gpu_unreadable() -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    nvml.fail_next("gpus", NvmlError("driver not loaded", 9))
    a, kube = agent(nvml, {**WHOLE, **encode_status({0: [Instance(0, "7g.80gb")]}, "p1")})
    result = await a.reconcile_once()
    assert result.ops == []
    status = decode_status(annotations_of(kube))
    assert status.gpus == {} and list(status.unreadable) == [0]
    assert "NvmlUnavailable" in [e.reason for e in kube.events]


async def test_a_hung_nvml_call_times_out_and_liveness_fails_until_it_returns() -> None:
    nvml = faulty()
    nvml.hang = threading.Event()
    a, kube = agent(nvml, WHOLE, nvml_call_timeout_seconds=0.2)
    manager = Manager(kube, server=ServerConfig(metrics_port=0, health_port=0))
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(manager.run(AgentRunner(manager, a), stop))
    try:
        await eventually(lambda: "NVML_ERROR_TIMEOUT" in str(annotations_of(kube)), what="the GPU reported unreadable")
        assert time.monotonic() - started < 5
        status = decode_status(annotations_of(kube))
        assert "NVML_ERROR_TIMEOUT" in status.unreadable[0]
        assert a.nvml_hung is not None and manager.live() is False
        assert manager.server is not None
        health = f"http://127.0.0.1:{manager.server.ports['health']}/healthz"
        async with aiohttp.ClientSession() as http:
            async with http.get(health) as resp:
                assert resp.status == 503
            nvml.hang.set()  # the driver call returns at last: healthy again
            await asyncio.sleep(0.1)
            async with http.get(health) as resp:
                assert resp.status == 200
        assert a.nvml_hung is None and manager.live() is True
    finally:
        nvml.hang.set()
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_liveness_fails_when_one_reconcile_runs_past_its_deadline() -> None:
    nvml = faulty()
    nvml.hang = threading.Event()
    a, kube = agent(nvml, WHOLE, nvml_call_timeout_seconds=None, liveness_timeout_seconds=0.1)
    manager = Manager(kube)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(AgentRunner(manager, a), stop))
    await eventually(lambda: manager.progress.started is not None, what="the reconcile started")
    await asyncio.sleep(0.3)
    assert manager.live() is False
    nvml.hang.set()
    await eventually(lambda: manager.progress.reconciles >= 1, what="the reconcile ended")
    assert manager.live() is True
    stop.set()
    await asyncio.wait_for(task, 5)


# -- finding 7: one Event per change --------------------------------------------------------------


async def test_malformed_spec_event_is_sent_once_per_change() -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    a, kube = agent(nvml, {**WHOLE, "nos.nebuly.com/spec-gpu-0-1g.10gb": "-1"})
    for _ in range(3):
        await a.reconcile_once()
    assert [e.reason for e in kube.events] == ["MalformedSpec"]


async def test_a_lost_gpu_does_not_block_destroys_elsewhere_when_nothing_is_allocated(kubelet: FakeKubelet) -> None:
    nvml = faulty(gpus=2)
    provision(nvml, 1, "1g.10gb", 0)
    nvml.lost.add(0)
    a, kube = agent(nvml, encode_spec({0: [], 1: [Instance(0, "7g.80gb")]}, "p"), kubelet)
    result = await a.reconcile_once()
    assert nvml.layout(1) == (Instance(0, "7g.80gb"),)
    assert result.applied is not None and not result.applied.failures
    assert "MigOperationFailed" not in [e.reason for e in kube.events]
