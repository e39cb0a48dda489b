from __future__ import annotations

import pytest

from nos.agent.agent import AgentConfig, MigAgent
from nos.agent.apply import Applier
from nos.agent.podresources import PodResourcesClient
from nos.agent.reconcile import Op
from nos.contract.annotations import decode_status, encode_spec
from nos.gpu.port import GpuInfo
from nos.mig.layout import Instance
from tests.agent.agent_fakes import FakeKube, FakeNvml, node, plugin_pod
from tests.agent.fake_kubelet import FakeKubelet

SPEC = encode_spec({0: [Instance(0, "3g.40gb"), Instance(4, "3g.40gb")]}, "p1")


def make(
    annotations: dict[str, str],
    nvml: FakeNvml | None = None,
    kubelet: FakeKubelet | None = None,
    **cfg: object,
) -> tuple[MigAgent, FakeNvml, FakeKube]:
    nvml = nvml or FakeNvml()
    kube = FakeKube([node(annotations=annotations)])
    kube.pods = [plugin_pod("dp-1")]
    kube.on_delete = lambda ns, name: kube.pods.append(plugin_pod(name + "x"))
    pr = PodResourcesClient(kubelet.socket_path) if kubelet else None
    config = AgentConfig.model_validate({"device_plugin": {"timeout_s": 5, "poll_s": 0.01}, **cfg})
    return MigAgent("n1", nvml, kube, pr, config), nvml, kube


def node_annotations(kube: FakeKube) -> dict[str, str]:
    return dict(kube.nodes["n1"]["metadata"]["annotations"])


@pytest.mark.asyncio
async def test_applies_restarts_device_plugin_and_reports(kubelet: FakeKubelet) -> None:
    nvml = FakeNvml()
    used = nvml.add(0, "1g.10gb", 0)
    nvml.add(0, "1g.10gb", 5)
    kubelet.allocations[("ml", "p", "c")] = {"nvidia.com/mig-1g.10gb": list(used.device_uuids)}
    agent, nvml, kube = make(SPEC, nvml, kubelet)

    result = await agent.reconcile_once()

    assert [(o.kind, o.profile, o.start) for o in result.ops] == [
        ("destroy", "1g.10gb", 5),
        ("create", "3g.40gb", 4),
    ]
    assert nvml.layout() == (Instance(0, "1g.10gb"), Instance(4, "3g.40gb"))
    assert [s.item for s in result.skipped] == ["3g.40gb@0", "in-use 1g.10gb@0"]
    assert result.device_plugin_restarted is True and kube.deleted == ["dp-1"]
    ann = node_annotations(kube)
    assert ann["nos.nebuly.com/status-gpu-0-1g.10gb-used"] == "1"
    assert ann["nos.nebuly.com/status-gpu-0-3g.40gb-free"] == "1"
    assert ann["nos.nebuly.com/status-placement-gpu-0"] == "1g.10gb@0:used,3g.40gb@4:free"
    assert ann["nos.nebuly.com/status-partitioning-plan"] == "p1"
    assert "SpecPartlyUnreachable" in [e.reason for e in kube.events]

    # pod gone: the next reconcile reaches the spec, then nothing changes any more
    kubelet.allocations.clear()
    await agent.reconcile_once()
    assert nvml.layout() == (Instance(0, "3g.40gb"), Instance(4, "3g.40gb"))
    assert "nos.nebuly.com/status-gpu-0-1g.10gb-used" not in node_annotations(kube)
    patches, deleted = len(kube.patches), list(kube.deleted)
    third = await agent.reconcile_once()
    assert third.ops == [] and third.patch == {} and len(kube.patches) == patches and kube.deleted == deleted
    assert third.device_plugin_restarted is None


@pytest.mark.asyncio
async def test_dry_run_touches_nothing() -> None:
    agent, nvml, kube = make(SPEC, dry_run=True)
    result = await agent.reconcile_once()
    assert [o.kind for o in result.ops] == ["create", "create"]
    assert nvml.mutations == 0 and kube.patches == [] and kube.deleted == []
    assert result.status["nos.nebuly.com/status-partitioning-plan"] == "p1"


@pytest.mark.asyncio
async def test_unlabelled_node_is_never_touched() -> None:
    agent, nvml, kube = make(SPEC)
    kube.nodes["n1"]["metadata"]["labels"] = {}
    result = await agent.reconcile_once()
    assert result.ops == [] and nvml.mutations == 0 and kube.patches == []


@pytest.mark.asyncio
async def test_no_spec_yet_changes_nothing_but_reports() -> None:
    nvml = FakeNvml()
    nvml.add(0, "7g.80gb", 0)
    agent, nvml, kube = make({}, nvml)
    result = await agent.reconcile_once()
    assert result.ops == [] and nvml.layout() == (Instance(0, "7g.80gb"),)
    assert node_annotations(kube)["nos.nebuly.com/status-gpu-0-7g.80gb-free"] == "1"


@pytest.mark.asyncio
async def test_mixed_models_refused_with_event() -> None:
    nvml = FakeNvml(gpus=2)
    nvml.infos[1] = GpuInfo(1, "GPU-1", "NVIDIA A30", 24576, True, True)
    agent, nvml, kube = make(SPEC, nvml)
    result = await agent.reconcile_once()
    await agent.reconcile_once()
    assert result.ops == [] and nvml.mutations == 0 and kube.patches == []
    assert [e.reason for e in kube.events] == ["MixedGpuModels"]


@pytest.mark.asyncio
async def test_mig_disabled_gpu_skipped_with_one_event() -> None:
    nvml = FakeNvml(gpus=2)
    nvml.infos[1] = GpuInfo(1, "GPU-1", nvml.infos[0].name, 81920, False, False)
    spec = encode_spec({0: [Instance(0, "7g.80gb")], 1: [Instance(0, "7g.80gb")]}, "p")
    agent, nvml, kube = make(spec, nvml)
    await agent.reconcile_once()
    await agent.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "7g.80gb"),) and nvml.layout(1) == ()
    assert [e.reason for e in kube.events] == ["MigDisabled"]
    assert "nos.nebuly.com/status-placement-gpu-1" not in node_annotations(kube)


@pytest.mark.asyncio
async def test_malformed_spec_leaves_that_gpu_alone() -> None:
    nvml = FakeNvml(gpus=2)
    nvml.add(1, "7g.80gb", 0)
    spec = {**encode_spec({0: [Instance(0, "7g.80gb")]}, "p"), "nos.nebuly.com/spec-gpu-1-1g.10gb": "lots"}
    agent, nvml, kube = make(spec, nvml)
    await agent.reconcile_once()
    assert nvml.layout(0) == (Instance(0, "7g.80gb"),)
    assert nvml.layout(1) == (Instance(0, "7g.80gb"),)  # untouched, though the spec omits it
    assert [e.reason for e in kube.events] == ["MalformedSpec"]


@pytest.mark.asyncio
async def test_node_level_malformed_spec_leaves_every_gpu_alone() -> None:
    spec = {**SPEC, "nos.nebuly.com/spec-placement-gpu-x": "1g.10gb@0"}
    agent, nvml, _ = make(spec)
    result = await agent.reconcile_once()
    assert result.ops == [] and nvml.mutations == 0


@pytest.mark.asyncio
async def test_podresources_unavailable_destroys_nothing(kubelet: FakeKubelet) -> None:
    import grpc

    nvml = FakeNvml()
    nvml.add(0, "1g.10gb", 0)
    nvml.add(0, "1g.10gb", 4)
    kubelet.fail = grpc.StatusCode.UNAVAILABLE
    agent, nvml, kube = make(SPEC, nvml, kubelet)
    result = await agent.reconcile_once()
    assert all(o.kind != "destroy" for o in result.ops)
    assert nvml.layout() == (Instance(0, "1g.10gb"), Instance(4, "1g.10gb"))
    assert "PodResourcesUnavailable" in [e.reason for e in kube.events]
    status = decode_status(node_annotations(kube))
    assert all(i.used for i in status.gpus[0].placements or ())


@pytest.mark.asyncio
async def test_nvml_failure_is_reported_and_independent_ops_still_run() -> None:
    nvml = FakeNvml()
    nvml.fail_creates.add((0, "3g.40gb", 0))
    agent, nvml, kube = make(SPEC, nvml)
    result = await agent.reconcile_once()
    assert result.applied is not None and len(result.applied.failures) == 1
    assert nvml.layout() == (Instance(4, "3g.40gb"),)
    assert "MigOperationFailed" in [e.reason for e in kube.events]
    assert node_annotations(kube)["nos.nebuly.com/status-placement-gpu-0"] == "3g.40gb@4:free"


def test_destroy_rechecks_in_use_and_skips_dependent_ops() -> None:
    nvml = FakeNvml()
    a = nvml.add(0, "3g.40gb", 0)
    b = nvml.add(0, "3g.40gb", 4)
    ops = [
        Op(0, "destroy", "3g.40gb", 0, 4, a.gi_id),
        Op(0, "destroy", "3g.40gb", 4, 4, b.gi_id),
        Op(0, "create", "2g.20gb", 0, 2),
        Op(0, "create", "2g.20gb", 4, 2),
    ]
    result = Applier(nvml, in_use=lambda gpu, gi: gi == a.gi_id).apply(ops)
    assert [r.ok for r in result.results] == [False, True, False, True]
    assert result.results[0].error == "in use now; not destroyed"
    assert "depends on failed destroy" in (result.results[2].error or "")
    assert nvml.layout() == (Instance(0, "3g.40gb"), Instance(4, "2g.20gb"))


@pytest.mark.asyncio
async def test_spec_for_a_gpu_the_node_lacks_is_noted_once() -> None:
    spec = encode_spec({0: [Instance(0, "7g.80gb")], 3: [Instance(0, "7g.80gb")]}, "p")
    agent, nvml, kube = make(spec)
    result = await agent.reconcile_once()
    await agent.reconcile_once()
    assert nvml.layout() == (Instance(0, "7g.80gb"),)
    assert result.notes == ["the spec names GPUs [3] that this node does not have"]
    assert [e.reason for e in kube.events] == ["SpecForMissingGpu"]
