"""``build_cluster``: managed nodes, their GPUs' layouts (read or safely inferred), free resources."""

from __future__ import annotations

from typing import Any

from nos.contract.annotations import encode_status
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance, layout_errors
from nos.planner.cluster import build_cluster, infer_layout

D = "nos.nebuly.com/"
A100 = default_catalog().model("A100-80GB")


def I(profile: str, start: int, used: bool = False) -> Instance:  # noqa: E743
    return Instance(start, profile, used)


def node(
    name: str = "n1",
    product: str | None = "NVIDIA-A100-SXM4-80GB",
    count: int | None = 2,
    annotations: dict[str, str] | None = None,
    label: str | None = "nos.nebuly.ai/gpu-partitioning",
    value: str = "mig",
    allocatable: dict[str, Any] | None = None,
) -> dict[str, Any]:
    labels: dict[str, str] = {}
    if label:
        labels[label] = value
    if product:
        labels["nvidia.com/gpu.product"] = product
    if count is not None:
        labels["nvidia.com/gpu.count"] = str(count)
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "status": {"allocatable": allocatable or {"cpu": "8", "memory": "64Gi", "pods": "10"}},
    }


def pod(
    name: str, node_name: str | None = None, phase: str = "Running", cpu: str = "1", **extra: Any
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "nodeName": node_name,
            "containers": [
                {
                    "name": "c",
                    "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}, "limits": {"nvidia.com/mig-1g.10gb": 1}},
                }
            ],
            **extra,
        },
        "status": {"phase": phase},
    }


def test_opt_in_through_either_label() -> None:
    state = build_cluster(
        [
            node("a", label="nos.nebuly.ai/gpu-partitioning"),
            node("b", label="nos.nebuly.com/gpu-partitioning"),
            node("c", label=None),
            node("d", label="nos.nebuly.com/gpu-partitioning", value="mps"),
            node("e", label="other/gpu-partitioning"),
        ],
        [],
    )
    assert sorted(state.nodes) == ["a", "b"]
    assert state.other_nodes == 3
    assert state.problems == []
    for n in state.nodes.values():
        assert n.frozen is None and n.model is A100
        assert [g.index for g in n.gpus] == [0, 1]
        assert all(g.instances == () and not g.frozen for g in n.gpus)


def test_unknown_product_freezes_the_node() -> None:
    state = build_cluster([node(product="NVIDIA-T4")], [])
    n = state.nodes["n1"]
    assert n.model is None and n.gpus == []
    assert n.frozen == "node n1: unknown GPU model 'NVIDIA-T4'"
    assert n.frozen in state.problems
    state = build_cluster([node(product=None)], [])
    assert state.nodes["n1"].frozen == "node n1 has no nvidia.com/gpu.product label"


def test_gfd_suffix_on_product() -> None:
    state = build_cluster([node(product="NVIDIA-A100-SXM4-80GB-MIG-1g.10gb")], [])
    assert state.nodes["n1"].model is A100


def test_status_with_placements_is_read() -> None:
    ann = encode_status({0: [I("3g.40gb", 0, True), I("2g.20gb", 4), I("1g.10gb", 6, True)]}, "p")
    state = build_cluster([node(annotations=ann)], [])
    gpu0, gpu1 = state.nodes["n1"].gpus
    assert gpu0.instances == (I("3g.40gb", 0, True), I("2g.20gb", 4), I("1g.10gb", 6, True))
    assert gpu0.used == (I("3g.40gb", 0, True), I("1g.10gb", 6, True)) and gpu0.free == (I("2g.20gb", 4),)
    assert gpu0.blocked == 0b01001111 and not gpu0.inferred and gpu0.frozen is None
    assert gpu1.instances == () and gpu1.blocked == 0


def test_malformed_status_on_gpu_1_freezes_only_gpu_1() -> None:
    ann = {
        **encode_status({0: [I("7g.80gb", 0)], 1: [I("7g.80gb", 0)]}, "p"),
        D + "status-gpu-1-7g.80gb-free": "one",
    }
    state = build_cluster([node(annotations=ann)], [])
    n = state.nodes["n1"]
    assert n.frozen is None
    gpu0, gpu1 = n.gpus
    assert gpu0.frozen is None and gpu0.instances == (I("7g.80gb", 0),)
    assert gpu1.frozen == "malformed annotations"
    problem = next(p for p in state.problems if D + "status-gpu-1-7g.80gb-free" in p)
    assert problem.startswith("node n1:")
    assert any(p.startswith("node n1 GPU 1:") for p in state.problems)
    assert not any("GPU 0" in p for p in state.problems)


def test_malformed_spec_on_gpu_0_freezes_gpu_0() -> None:
    state = build_cluster([node(annotations={D + "spec-gpu-0-1g.10gb": "x"})], [])
    assert [g.frozen for g in state.nodes["n1"].gpus] == ["malformed annotations", None]


def test_key_not_attributable_to_a_gpu_freezes_the_node() -> None:
    ann = {**encode_status({0: [I("7g.80gb", 0)]}, "p"), D + "status-placement-gpu-x": "7g.80gb@0:free"}
    state = build_cluster([node(annotations=ann)], [])
    n = state.nodes["n1"]
    assert n.frozen is not None and "node n1" in n.frozen
    assert any(D + "status-placement-gpu-x" in p and p.startswith("node n1:") for p in state.problems)


def test_impossible_placements_freeze_the_gpu() -> None:
    ann = {D + "status-gpu-0-4g.40gb-used": "1", D + "status-placement-gpu-0": "4g.40gb@4:used"}
    gpu0 = build_cluster([node(annotations=ann)], []).nodes["n1"].gpus[0]
    assert gpu0.frozen is not None and "impossible" in gpu0.frozen


def test_unknown_status_profile_freezes_the_gpu() -> None:
    gpu0 = build_cluster([node(annotations={D + "status-gpu-0-3g.20gb-free": "1"})], []).nodes["n1"].gpus[0]
    assert gpu0.frozen == "status reports profile 3g.20gb, unknown on A100-80GB"


def test_counts_without_placements_are_inferred_conservatively() -> None:
    ann = {D + "status-gpu-0-1g.10gb-used": "1", D + "status-gpu-0-3g.40gb-free": "1"}
    gpu0 = build_cluster([node(annotations=ann, count=1)], []).nodes["n1"].gpus[0]
    assert gpu0.inferred and gpu0.frozen is None
    assert not layout_errors(A100, gpu0.instances)
    assert sorted((i.profile, i.used) for i in gpu0.instances) == [("1g.10gb", True), ("3g.40gb", False)]
    # The used 1g can be at 4, 5, 6 (3g at 0) or at 0..3 (3g at 4): any of slots 0..6.
    consistent = set()
    for used_at in range(8):
        for three_at in (0, 4):
            if not layout_errors(A100, [I("1g.10gb", used_at, True), I("3g.40gb", three_at)]):
                consistent.add(used_at)
    assert consistent == set(range(7))
    assert gpu0.blocked == sum(1 << s for s in consistent) == 0b01111111


def test_inferred_mask_with_a_used_large_instance() -> None:
    ann = {D + "status-gpu-0-4g.40gb-used": "1", D + "status-gpu-0-1g.10gb-free": "2"}
    gpu0 = build_cluster([node(annotations=ann, count=1)], []).nodes["n1"].gpus[0]
    assert gpu0.inferred and gpu0.blocked == 0b00001111, "a 4g can only be at 0"
    ann = {D + "status-gpu-0-1g.10gb-used": "7"}
    gpu0 = build_cluster([node(annotations=ann, count=1)], []).nodes["n1"].gpus[0]
    assert gpu0.blocked == 0b01111111 and len(gpu0.instances) == 7
    ann = {D + "status-gpu-0-3g.40gb-used": "1", D + "status-gpu-0-4g.40gb-free": "1"}
    gpu0 = build_cluster([node(annotations=ann, count=1)], []).nodes["n1"].gpus[0]
    assert gpu0.instances == (I("4g.40gb", 0), I("3g.40gb", 4, True)) and gpu0.blocked == 0b11110000


def test_infer_layout_directly() -> None:
    from nos.contract.annotations import GpuAnnotations

    gpu = GpuAnnotations()
    assert infer_layout(A100, gpu) == ((), 0)
    gpu.counts[("1g.10gb", False)] = 3
    assert infer_layout(A100, gpu) is not None and infer_layout(A100, gpu)[1] == 0  # type: ignore[index]


def test_counts_that_fit_no_layout_freeze_the_gpu() -> None:
    for ann in (
        {D + "status-gpu-0-4g.40gb-used": "2"},
        {D + "status-gpu-0-3g.40gb-used": "2", D + "status-gpu-0-1g.10gb-free": "1"},
        {D + "status-gpu-0-1g.10gb-free": "8"},
    ):
        gpu0 = build_cluster([node(annotations=ann, count=1)], []).nodes["n1"].gpus[0]
        assert gpu0.frozen == "reported counts fit no physical layout", ann


def test_gpu_indices_from_label_and_annotations() -> None:
    ann = encode_status({3: [I("7g.80gb", 0)]}, "p")
    state = build_cluster([node(annotations=ann, count=2)], [])
    assert [g.index for g in state.nodes["n1"].gpus] == [0, 1, 3]
    state = build_cluster([node(count=None)], [])
    assert state.nodes["n1"].frozen is not None and "nvidia.com/gpu.count" in state.nodes["n1"].frozen


def test_bound_pods_are_subtracted_terminated_are_not() -> None:
    pods = [
        pod("a", "n1", cpu="2"),
        pod("b", "n1", phase="Pending", cpu="500m"),  # bound, not yet running: counts
        pod("c", "n1", phase="Succeeded", cpu="4"),
        pod("d", "n1", phase="Failed", cpu="4"),
        pod("e", "n2", cpu="1"),
        pod("f", None, phase="Pending"),
    ]
    state = build_cluster([node("n1", allocatable={"cpu": "8", "memory": "64Gi", "nvidia.com/mig-1g.10gb": 3})], pods)
    free = state.nodes["n1"].free
    assert free["cpu"] == 8000 - 2000 - 500
    assert free["memory"] == 62 * 2**30
    assert free["pods"] == 110 - 2, "no pods allocatable: the default 110"
    assert "nvidia.com/mig-1g.10gb" not in free, "MIG resources are planned, not counted"


def test_candidates_and_object_problems() -> None:
    pending = pod("want", None, phase="Pending")
    pending["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    broken = pod("broken", None)
    broken["spec"]["priority"] = "high"
    state = build_cluster([node(), {"metadata": {}}], [pending, pod("run", "n1"), broken])
    assert [p.key for p in state.candidates] == ["ns/want"]
    assert any("broken" in p for p in state.problems)
    assert any("Node has no metadata.name" in p for p in state.problems)
