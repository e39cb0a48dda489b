"""Planner behaviour on small clusters where the right answer is known."""

from __future__ import annotations

from typing import Any

from nos.contract.annotations import SPEC_PLAN, STATUS_PREFIX, decode_spec
from nos.mig.layout import Instance as I
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.plan import Plan
from nos.planner.planner import plan
from tests.planner.factories import A30, A100, H100, node, pod


def run(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], **kw: Any) -> Plan:
    result = plan(nodes, pods, **kw)
    assert check_plan(build_cluster(nodes, pods), result) == []
    return result


def where(result: Plan) -> dict[str, tuple[str, int]]:
    return {p.pod: (p.node, p.gpu) for p in result.placed}


def reasons(result: Plan) -> dict[str, str]:
    return {u.pod: u.reason for u in result.unplaced}


def layout(result: Plan, node_name: str, gpu: int) -> list[str]:
    return [f"{i.profile}@{i.start}" for i in result.nodes[node_name].gpus[gpu].planned]


def test_new_node_gets_the_initial_whole_gpu_layout() -> None:
    result = run([node("n1", A100, gpus=2), node("n2", A30, gpus=1)], [])
    assert layout(result, "n1", 0) == ["7g.80gb@0"]
    assert layout(result, "n1", 1) == ["7g.80gb@0"]
    assert layout(result, "n2", 0) == ["4g.24gb@0"]
    assert result.nodes["n1"].write and result.nodes["n1"].changed


def test_existing_free_instance_is_used_without_reconfiguring() -> None:
    nodes = [
        node("a", status={0: [I(0, "7g.80gb")]}),
        node("b", status={0: [I(0, "3g.40gb", True), I(4, "1g.10gb")]}),
    ]
    result = run(nodes, [pod("p", "1g.10gb")])
    assert where(result) == {"default/p": ("b", 0)}
    assert result.placed[0].existing
    assert result.changed_nodes == []
    assert not any(n.write for n in result.nodes.values())


def test_in_use_instances_are_never_moved() -> None:
    # a used 1g at slot 1 makes 4g impossible on that GPU: 4g must start at slot 0
    nodes = [node("a", status={0: [I(1, "1g.10gb", True)]})]
    result = run(nodes, [pod("big", "4g.40gb"), pod("small", "3g.40gb")])
    assert "default/big" in reasons(result)
    assert "in-use" in reasons(result)["default/big"]
    assert where(result)["default/small"] == ("a", 0)
    assert "1g.10gb@1" in layout(result, "a", 0)
    assert "3g.40gb@4" in layout(result, "a", 0)


def test_free_instances_are_destroyed_when_that_helps() -> None:
    nodes = [node("a", status={0: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod(f"p{i}", "1g.10gb") for i in range(7)])
    assert len(result.placed) == 7
    assert layout(result, "a", 0) == [f"1g.10gb@{s}" for s in range(7)]


def test_placement_aware_packing_beats_first_fit() -> None:
    # 1g pods placed naively at slots 0 and 4 would block both 4g@0 and 3g@4
    nodes = [node("a", gpus=1, status={0: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod("s1", "1g.10gb"), pod("s2", "1g.10gb"), pod("m", "4g.40gb")])
    assert len(result.placed) == 3, reasons(result)
    assert sorted(layout(result, "a", 0)) == ["1g.10gb@4", "1g.10gb@5", "4g.40gb@0"]


def test_fill_puts_the_largest_instances_in_spare_slots() -> None:
    nodes = [node("a", gpus=1, status={0: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod("s1", "1g.10gb"), pod("s2", "1g.10gb"), pod("m", "4g.40gb")], fill=True)
    assert sorted(layout(result, "a", 0)) == ["1g.10gb@4", "1g.10gb@5", "1g.20gb@6", "4g.40gb@0"]


def test_higher_priority_wins_scarce_capacity() -> None:
    nodes = [node("a", status={0: [I(0, "4g.40gb", True)]})]
    pods = [pod("low", "3g.40gb", created="2026-01-01T00:00:00Z"), pod("high", "3g.40gb", priority=10)]
    result = run(nodes, pods)
    assert [p.pod for p in result.placed] == ["default/high"]
    assert "went to pods planned before it" in reasons(result)["default/low"]


def test_prefers_a_node_already_reconfigured() -> None:
    nodes = [
        node("a", status={0: [I(0, "7g.80gb")]}),
        node("b", status={0: [I(0, "7g.80gb")]}),
    ]
    result = run(nodes, [pod("p1", "3g.40gb"), pod("p2", "3g.40gb")])
    assert len({n for n, _ in where(result).values()}) == 1
    assert len(result.changed_nodes) == 1


def test_best_fit_keeps_an_empty_gpu_for_a_large_pod() -> None:
    nodes = [
        node("a", gpus=2, status={0: [I(0, "4g.40gb", True), I(4, "3g.40gb")], 1: [I(0, "7g.80gb")]}),
    ]
    result = run(nodes, [pod("small", "1g.10gb"), pod("whole", "7g.80gb")])
    assert where(result) == {"default/small": ("a", 0), "default/whole": ("a", 1)}


def test_scheduling_simulation_reasons() -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    nodes = [
        node("a", status={0: [I(0, "7g.80gb")]}, taints=[taint], cpu="4"),
        node("b", status={0: [I(0, "7g.80gb")]}, unschedulable=True),
    ]
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pods = [
        pod("untolerated", "1g.10gb"),
        pod("hungry", "1g.10gb", cpu="8", tolerations=tol),
        pod("selector", "1g.10gb", node_selector={"zone": "x"}, tolerations=tol),
        pod("ok", "1g.10gb", cpu="4", tolerations=tol, created="2026-11-29T09:00:00Z"),
        pod("no-room-left", "1g.10gb", cpu="1", tolerations=tol),
    ]
    result = run(nodes, pods)
    why = reasons(result)
    assert where(result) == {"default/ok": ("a", 0)}
    assert "untolerated taint nvidia.com/gpu" in why["default/untolerated"]
    assert "cordoned" in why["default/untolerated"]
    assert "insufficient cpu" in why["default/hungry"]
    assert "nodeSelector" in why["default/selector"]
    assert "insufficient cpu" in why["default/no-room-left"]


def test_unservable_requests_are_reported_not_dropped() -> None:
    nodes = [node("a", status={0: [I(0, "7g.80gb")]})]
    pods = [pod("two", "1g.10gb", mig_count=2), pod("a40", "3g.20gb"), pod("fine", "2g.20gb")]
    result = run(nodes, pods)
    why = reasons(result)
    assert "requests 2 MIG devices" in why["default/two"]
    assert "no GPU model in the cluster offers nvidia.com/mig-3g.20gb" in why["default/a40"]
    assert where(result) == {"default/fine": ("a", 0)}


def test_bound_pods_consume_node_resources() -> None:
    nodes = [node("a", status={0: [I(0, "7g.80gb")]}, cpu="4")]
    pods = [pod("running", None, cpu="3", node_name="a"), pod("p", "1g.10gb", cpu="2")]
    result = run(nodes, pods)
    assert "insufficient cpu" in reasons(result)["default/p"]


def test_malformed_status_freezes_only_that_gpu() -> None:
    bad = {STATUS_PREFIX + "1-1g.10gb-used": "many"}
    nodes = [
        node("a", gpus=2, status={0: [I(0, "7g.80gb")], 1: [I(0, "1g.10gb", True)]}, extra_annotations=bad),
    ]
    result = run(nodes, [pod(f"p{i}", "1g.10gb") for i in range(8)])
    gpu1 = result.nodes["a"].gpus[1]
    assert gpu1.frozen and not gpu1.changed
    assert all(p.gpu == 0 for p in result.placed)
    spec = decode_spec(result.nodes["a"].annotations)
    assert spec.gpus[1].profile_counts() == {"1g.10gb": 1}  # kept verbatim, nothing destroyed
    assert any("status-gpu-1-1g.10gb-used" in p for p in result.problems)


def test_frozen_gpu_without_spec_freezes_its_node() -> None:
    bad = {STATUS_PREFIX + "0-1g.10gb-free": "x"}
    nodes = [node("a", gpus=1, status={}, extra_annotations=bad, spec_matches_status=False)]
    result = run(nodes, [pod("p", "1g.10gb")])
    assert result.nodes["a"].frozen
    assert not result.nodes["a"].write
    assert result.placed == []


def test_counts_only_status_is_planned_conservatively() -> None:
    # no placement extension (an agent of the original nos): the used 1g could be anywhere in 0..3
    annotations = {
        STATUS_PREFIX + "0-1g.10gb-used": "1",
        STATUS_PREFIX + "0-3g.40gb-free": "1",
    }
    nodes = [node("a", gpus=1, extra_annotations=annotations)]
    result = run(nodes, [pod("p", "2g.20gb")])
    state = build_cluster(nodes, [])
    gpu = state.nodes["a"].gpus[0]
    assert gpu.inferred
    assert gpu.blocked & 0b1111 == 0b1111  # every slot the used 1g may sit in
    for inst in result.nodes["a"].gpus[0].planned:
        if inst.profile == "2g.20gb":
            assert inst.start >= 4


def test_allowed_geometries_restrict_layouts() -> None:
    geometries = {"A100-80GB": [{"1g.10gb": 7}, {"3g.40gb": 2}]}
    nodes = [node("a", gpus=2, status={0: [I(0, "7g.80gb")], 1: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod("p", "3g.40gb"), pod("q", "1g.10gb")], geometries=geometries)
    layouts = [sorted(i.profile for i in g.planned) for g in result.nodes["a"].gpus]
    # each GPU fits within one allowed geometry; spare slots stay empty (no 3g + 1g on one GPU)
    assert sorted(layouts) == [["1g.10gb"], ["3g.40gb"]]
    assert len(result.placed) == 2
    filled = run(nodes, [pod("p", "3g.40gb"), pod("q", "1g.10gb")], geometries=geometries, fill=True)
    layouts = [sorted(i.profile for i in g.planned) for g in filled.nodes["a"].gpus]
    assert sorted(layouts) == [["1g.10gb"] * 7, ["3g.40gb"] * 2]  # --fill: filled within the geometry


def test_plan_is_deterministic_and_writes_only_changed_nodes() -> None:
    nodes = [
        node("a", status={0: [I(0, "7g.80gb")]}),
        node("b", status={0: [I(0, "3g.40gb", True), I(4, "3g.40gb", True)]}),
        node("c", H100, status={0: [I(0, "1g.10gb", True)]}),
    ]
    pods = [pod("p1", "2g.20gb"), pod("p2", "1g.10gb")]
    first, second = plan(nodes, pods), plan(nodes, pods)
    assert first.to_json() == second.to_json()
    assert [n for n, p in first.nodes.items() if p.write] == first.changed_nodes
    for name, np in first.nodes.items():
        if np.write:
            assert np.annotations[SPEC_PLAN] == first.plan_id
        else:
            before = nodes[ord(name) - ord("a")]["metadata"]["annotations"]
            assert np.annotations == {k: v for k, v in before.items() if k.startswith("nos.nebuly.com/spec")}


def test_unlabelled_nodes_are_never_touched() -> None:
    plain = node("plain", status={0: [I(0, "7g.80gb")]})
    plain["metadata"]["labels"].pop("nos.nebuly.ai/gpu-partitioning")
    legacy = node("legacy", status={0: [I(0, "7g.80gb")]})
    legacy["metadata"]["labels"].pop("nos.nebuly.ai/gpu-partitioning")
    legacy["metadata"]["labels"]["nos.nebuly.com/gpu-partitioning"] = "mig"
    result = run([plain, legacy], [pod("p", "1g.10gb")])
    assert set(result.nodes) == {"legacy"}
    assert where(result) == {"default/p": ("legacy", 0)}


def test_candidates_are_ordered_by_the_catalogs_profile_sizes() -> None:
    """Priority first, then smaller profiles (compute slices, then memory, from the catalog), then age;
    a resource no model offers comes after every real profile."""
    from nos.contract.pods import CandidatePod, read_pod
    from nos.mig.catalog import default_catalog
    from nos.planner.planner import candidate_order

    wanted = [("big", "3g.40gb", 0), ("small", "1g.10gb", 0), ("double", "1g.20gb", 0)]
    wanted += [("unknown", "9g.99gb", 0), ("urgent", "7g.80gb", 10)]
    pods = {name: read_pod(pod(name, profile, priority=prio)) for name, profile, prio in wanted}
    assert all(isinstance(p, CandidatePod) for p in pods.values())
    order = sorted(pods, key=lambda n: candidate_order(pods[n], default_catalog()))  # type: ignore[arg-type]
    assert order == ["urgent", "small", "double", "big", "unknown"]


def test_unplaced_reason_counts_full_nodes_that_accept_the_pod_but_not_frozen_ones() -> None:
    # "a" is left without cpu by the first pod (it leaves the planner's index as full) yet still
    # accepts the second; "b" accepts it too but is frozen (an impossible GPU count): not eligible
    nodes = [
        node("a", gpus=1, cpu="2", status={0: [I(0, "7g.80gb")]}),
        node("b", gpus=1, labels={"nvidia.com/gpu.count": "999"}, status={0: [I(0, "7g.80gb")]}),
    ]
    pods = [pod("first", "1g.10gb", cpu="2", priority=10), pod("second", "1g.10gb", cpu="1")]
    result = run(nodes, pods)
    assert where(result) == {"default/first": ("a", 0)}
    assert reasons(result)["default/second"] == "fits no node: insufficient cpu on 1 of 1 eligible node(s)"
