from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nos.agent.agent import MigAgent
from nos.agent.apply import Applier
from nos.agent.podresources import PodResourcesClient
from nos.agent.reconcile import Op
from nos.config import AgentConfig
from nos.contract.annotations import decode_status, encode_spec
from nos.gpu.port import NvmlInsufficientResources
from nos.gpu.simulated import SimulatedNvml
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance
from tests.agent.fake_kubelet import FakeKubelet
from tests.agent.helpers import annotations_of, daemonset, node, plugin_pod, provision

SPEC = encode_spec({0: [Instance(0, "3g.40gb"), Instance(4, "3g.40gb")]}, "p1")


@dataclass
class Setup:
    agent: MigAgent
    nvml: SimulatedNvml
    kube: MemoryKube
    deleted: list[str] = field(default_factory=list)
    """Device plugin pods deleted (the DaemonSet recreates each as ``<name>x``, Running)."""

    def patches(self) -> int:
        return self.kube.calls.count("patch nodes")

    def annotations(self) -> dict[str, str]:
        return annotations_of(self.kube)


def make(
    annotations: dict[str, str],
    nvml: SimulatedNvml | None = None,
    kubelet: FakeKubelet | None = None,
    labelled: bool = True,
    **cfg: object,
) -> Setup:
    nvml = nvml or SimulatedNvml.new("A100-80GB")
    kube = MemoryKube()
    kube.add_node(node(annotations=annotations, labelled=labelled))
    kube.add_pod(plugin_pod("dp-1"))
    deleted: list[str] = []
    kube.on_pod_deleted(daemonset(kube, deleted, delay=0.02))
    pr = PodResourcesClient(kubelet.socket_path) if kubelet else None
    config = AgentConfig.model_validate(
        {"device_plugin": {"timeout_seconds": 5, "poll_seconds": 0.01, "wait_allocatable": False}, **cfg}
    )
    return Setup(MigAgent("n1", nvml, kube, pr, config), nvml, kube, deleted)


@pytest.mark.asyncio
async def test_applies_restarts_device_plugin_and_reports(kubelet: FakeKubelet) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    used = provision(nvml, 0, "1g.10gb", 0)
    provision(nvml, 0, "1g.10gb", 5)
    kubelet.allocations[("ml", "p", "c")] = {"nvidia.com/mig-1g.10gb": list(used.device_uuids)}
    s = make(SPEC, nvml, kubelet)

    result = await s.agent.reconcile_once()

    assert [(o.kind, o.profile, o.start) for o in result.ops] == [
        ("destroy", "1g.10gb", 5),
        ("create", "3g.40gb", 4),
    ]
    assert nvml.layout(0) == (Instance(0, "1g.10gb"), Instance(4, "3g.40gb"))
    assert [k.item for k in result.skipped] == ["3g.40gb@0", "in-use 1g.10gb@0"]
    assert result.device_plugin_restarted is True and s.deleted == ["dp-1"]
    [plugin] = await s.kube.list("pods", "gpu-operator")
    assert plugin["metadata"]["name"] == "dp-1x" and plugin["status"]["phase"] == "Running"
    ann = s.annotations()
    assert ann["nos.nebuly.com/status-gpu-0-1g.10gb-used"] == "1"
    assert ann["nos.nebuly.com/status-gpu-0-3g.40gb-free"] == "1"
    assert ann["nos.nebuly.com/status-placement-gpu-0"] == "1g.10gb@0:used,3g.40gb@4:free"
    assert ann["nos.nebuly.com/status-partitioning-plan"] == "p1"
    assert "SpecPartlyUnreachable" in [e.reason for e in s.kube.events]

    # pod gone: the next reconcile reaches the spec, then nothing changes any more
    kubelet.allocations.clear()
    await s.agent.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "3g.40gb"), Instance(4, "3g.40gb"))
    assert "nos.nebuly.com/status-gpu-0-1g.10gb-used" not in s.annotations()
    assert s.deleted == ["dp-1", "dp-1x"]
    patches, deleted, log = s.patches(), list(s.deleted), list(nvml.log)
    third = await s.agent.reconcile_once()
    assert third.ops == [] and third.patch == {} and s.patches() == patches and s.deleted == deleted
    assert nvml.log == log
    assert third.device_plugin_restarted is None
    await s.kube.settle()


@pytest.mark.asyncio
async def test_dry_run_touches_nothing() -> None:
    s = make(SPEC, dry_run=True)
    result = await s.agent.reconcile_once()
    assert [o.kind for o in result.ops] == ["create", "create"]
    assert s.nvml.log == [] and s.nvml.layout(0) == ()
    assert s.patches() == 0 and s.deleted == [] and s.annotations() == SPEC
    assert result.status["nos.nebuly.com/status-partitioning-plan"] == "p1"


@pytest.mark.asyncio
async def test_unlabelled_node_is_never_touched() -> None:
    s = make(SPEC, labelled=False)
    result = await s.agent.reconcile_once()
    assert result.ops == [] and s.nvml.log == [] and s.patches() == 0 and s.deleted == []


@pytest.mark.asyncio
async def test_no_spec_yet_changes_nothing_but_reports() -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    provision(nvml, 0, "7g.80gb", 0)
    log = list(nvml.log)
    s = make({}, nvml)
    result = await s.agent.reconcile_once()
    assert result.ops == [] and nvml.layout(0) == (Instance(0, "7g.80gb"),) and nvml.log == log
    assert s.annotations()["nos.nebuly.com/status-gpu-0-7g.80gb-free"] == "1"


@pytest.mark.asyncio
async def test_mixed_models_refused_with_event() -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    nvml.add_gpu("A30-24GB")
    s = make(SPEC, nvml)
    result = await s.agent.reconcile_once()
    await s.agent.reconcile_once()
    assert result.ops == [] and nvml.log == [] and s.patches() == 1
    assert [e.reason for e in s.kube.events] == ["MixedGpuModels"]
    # no layout is reported (the partitioner plans per node model); each GPU says why
    status = decode_status(s.annotations())
    assert status.gpus == {} and sorted(status.unreadable) == [0, 1]


@pytest.mark.asyncio
async def test_mig_disabled_gpu_skipped_with_one_event() -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    nvml.add_gpu("A100-80GB", mig_enabled=False)
    spec = encode_spec({0: [Instance(0, "7g.80gb")], 1: [Instance(0, "7g.80gb")]}, "p")
    s = make(spec, nvml)
    await s.agent.reconcile_once()
    await s.agent.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "7g.80gb"),) and nvml.layout(1) == ()
    assert [e.reason for e in s.kube.events] == ["MigDisabled"]
    assert "nos.nebuly.com/status-placement-gpu-1" not in s.annotations()


@pytest.mark.asyncio
async def test_malformed_spec_leaves_that_gpu_alone() -> None:
    nvml = SimulatedNvml.new("A100-80GB", gpus=2)
    provision(nvml, 1, "7g.80gb", 0)
    spec = {**encode_spec({0: [Instance(0, "7g.80gb")]}, "p"), "nos.nebuly.com/spec-gpu-1-1g.10gb": "lots"}
    s = make(spec, nvml)
    await s.agent.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "7g.80gb"),)
    assert nvml.layout(1) == (Instance(0, "7g.80gb"),)  # untouched, though the spec omits it
    assert [e.reason for e in s.kube.events] == ["MalformedSpec"]


@pytest.mark.asyncio
async def test_node_level_malformed_spec_leaves_every_gpu_alone() -> None:
    spec = {**SPEC, "nos.nebuly.com/spec-placement-gpu-x": "1g.10gb@0"}
    s = make(spec)
    result = await s.agent.reconcile_once()
    assert result.ops == [] and s.nvml.log == []


@pytest.mark.asyncio
async def test_podresources_unavailable_destroys_nothing(kubelet: FakeKubelet) -> None:
    import grpc

    nvml = SimulatedNvml.new("A100-80GB")
    provision(nvml, 0, "1g.10gb", 0)
    provision(nvml, 0, "1g.10gb", 4)
    kubelet.fail = grpc.StatusCode.UNAVAILABLE
    s = make(SPEC, nvml, kubelet)
    result = await s.agent.reconcile_once()
    assert all(o.kind != "destroy" for o in result.ops)
    assert not any(line.startswith("destroy") for line in nvml.log)
    assert nvml.layout(0) == (Instance(0, "1g.10gb"), Instance(4, "1g.10gb"))
    assert "PodResourcesUnavailable" in [e.reason for e in s.kube.events]
    status = decode_status(s.annotations())
    assert all(i.used for i in status.gpus[0].placements or ())


@pytest.mark.asyncio
async def test_nvml_failure_is_reported_and_independent_ops_still_run() -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    nvml.fail_next("create_gpu_instance", NvmlInsufficientResources("injected"))
    s = make(SPEC, nvml)
    result = await s.agent.reconcile_once()
    assert result.applied is not None
    [failure] = result.applied.failures
    assert (failure.op.profile, failure.op.start) == ("3g.40gb", 0)
    assert failure.error == "NVML_ERROR_INSUFFICIENT_RESOURCES: injected"
    assert nvml.layout(0) == (Instance(4, "3g.40gb"),)
    assert "MigOperationFailed" in [e.reason for e in s.kube.events]
    assert s.annotations()["nos.nebuly.com/status-placement-gpu-0"] == "3g.40gb@4:free"
    await s.kube.settle()


@pytest.mark.parametrize("how", ["in_use check", "running process"])
def test_destroy_rechecks_in_use_and_skips_dependent_ops(how: str) -> None:
    nvml = SimulatedNvml.new("A100-80GB")
    a = provision(nvml, 0, "3g.40gb", 0)
    b = provision(nvml, 0, "3g.40gb", 4)
    ops = [
        Op(0, "destroy", "3g.40gb", 0, 4, a.gi_id, device_uuids=a.device_uuids),
        Op(0, "destroy", "3g.40gb", 4, 4, b.gi_id, device_uuids=b.device_uuids),
        Op(0, "create", "2g.20gb", 0, 2),
        Op(0, "create", "2g.20gb", 4, 2),
    ]
    if how == "in_use check":  # kubelet says the instance was allocated since planning
        applier = Applier(nvml, in_use=lambda gpu, gi: gi == a.gi_id)
    else:  # a process started in it since planning
        nvml.set_busy(0, a.gi_id)
        applier = Applier(nvml)
    result = applier.apply(ops)
    assert [r.ok for r in result.results] == [False, True, False, True]
    assert result.results[0].error == "in use now; not destroyed"
    assert "depends on failed destroy" in (result.results[2].error or "")
    busy = how == "running process"
    assert nvml.layout(0) == (Instance(0, "3g.40gb", busy), Instance(4, "2g.20gb"))


@pytest.mark.asyncio
async def test_spec_for_a_gpu_the_node_lacks_is_noted_once() -> None:
    spec = encode_spec({0: [Instance(0, "7g.80gb")], 3: [Instance(0, "7g.80gb")]}, "p")
    s = make(spec)
    result = await s.agent.reconcile_once()
    await s.agent.reconcile_once()
    assert s.nvml.layout(0) == (Instance(0, "7g.80gb"),)
    assert result.notes == ["the spec names GPUs [3] that this node does not have"]
    assert [e.reason for e in s.kube.events] == ["SpecForMissingGpu"]
    await s.kube.settle()


@pytest.mark.asyncio
async def test_stale_device_plugin_is_restarted_when_allocatable_misses_existing_devices() -> None:
    """A previous agent process created the instances and died before restarting the plugin: the
    node still advertises nothing, so this agent restarts the plugin although it has nothing to apply."""
    nvml = SimulatedNvml.new("A100-80GB")
    provision(nvml, 0, "3g.40gb", 0)
    provision(nvml, 0, "3g.40gb", 4)
    now = [1000.0]
    s = make(SPEC, nvml)
    s.agent = MigAgent("n1", nvml, s.kube, None, s.agent.config, clock=lambda: now[0])

    first = await s.agent.reconcile_once()
    assert first.ops == [] and first.device_plugin_restarted is True and s.deleted == ["dp-1"]
    assert "DevicePluginStale" in [e.reason for e in s.kube.events]

    again = await s.agent.reconcile_once()  # the restart may still be settling: no second restart
    assert again.device_plugin_restarted is None and s.deleted == ["dp-1"]

    node_obj = await s.kube.get("nodes", "n1")
    node_obj["status"] = {"allocatable": {"nvidia.com/mig-3g.40gb": "2", "nvidia.com/mig-1g.10gb": "0"}}
    s.kube.update_node(node_obj)
    now[0] += 3600
    settled = await s.agent.reconcile_once()  # advertised as it exists (a vanished profile at 0 is fine)
    assert settled.device_plugin_restarted is None and s.deleted == ["dp-1"]
    await s.kube.settle()
