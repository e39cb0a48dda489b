"""The upper bound on placeable pods (``nos.planner.bound``): never below what the optimum places,
and skipping the later passes and the optimizing stage only where they could not do better."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from nos.mig.layout import Instance as I
from nos.mig.packing import Packer
from nos.planner import bound, lns
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from tests.planner.factories import node, pod
from tests.planner.test_properties import Cluster, clusters

FULL = {0: [I(0, "4g.40gb", True), I(4, "3g.40gb", True)]}
"""An A100 whose every slice is in use."""


def placed_by_priority(plan: Plan, pods: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> Counter[int]:
    priority = {p.key: p.priority for p in build_cluster(nodes, pods).candidates}
    return Counter(priority[p.pod] for p in plan.placed)


def test_a_full_cluster_with_a_backlog_is_planned_without_the_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise AssertionError("the optimizing stage ran")

    monkeypatch.setattr(lns, "improve", fail)
    nodes = [node("a", status=FULL), node("b", status={0: [I(0, "7g.80gb", True)]})]
    pods = [pod(f"p{i}", profile, priority=i % 2) for i, profile in enumerate(["1g.10gb", "7g.80gb", "3g.40gb"] * 20)]
    result = plan_state(build_cluster(nodes, pods))
    assert result.placed == [] and len(result.unplaced) == 60
    assert result.search is not None and result.search.optimal and "upper bound" in result.search.note
    assert not result.changed_nodes


def test_pods_that_fit_somewhere_count_and_the_rest_do_not() -> None:
    nodes = [
        node("a", status={0: [I(0, "4g.40gb", True), I(4, "3g.40gb")]}, cpu="4"),  # a free 3g.40gb
        node("b", status={0: [I(0, "3g.40gb", True), I(4, "3g.40gb", True)]}),  # no room at all
    ]
    pods = [
        pod("small", "1g.10gb", priority=5),  # where a's free 3g.40gb is
        pod("half", "3g.40gb"),  # a's free instance
        pod("big", "4g.40gb"),  # no GPU has room next to its in-use instances
        pod("hungry", "3g.40gb", cpu="8"),  # only a has room, and too little cpu
    ]
    state = build_cluster(nodes, pods)
    assert bound.placeable(state, Packer()) == (
        Counter({5: 1, 0: 1}),
        frozenset({"nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"}),
    )
    assert bound.always_changed(state) == 0
    limit = bound.Bound(state, Packer())
    assert limit.met(["default/small", "default/half"], 0)
    assert not limit.met(["default/small", "default/half"], 1)  # a plan reconfiguring no node may exist
    assert not limit.met(["default/half"], 0)


def test_a_gpu_without_instances_makes_its_node_changed_in_every_plan() -> None:
    nodes = [node("a", gpus=2, status={0: [I(0, "7g.80gb", True)], 1: []})]
    state = build_cluster(nodes, [pod("x", "7g.80gb")])
    assert bound.always_changed(state) == 1
    assert bound.Bound(state, Packer()).met(["default/x"], 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_no_plan_places_more_than_the_bound(cluster: Cluster) -> None:
    nodes, pods = cluster
    state = build_cluster(nodes, pods)
    limit, _ = bound.placeable(state, Packer())
    for result in (plan_state(state, optimize=False), plan_state(state, budget=20.0)):
        assert check_plan(state, result) == []
        got = placed_by_priority(result, pods, nodes)
        assert all(got[p] <= limit[p] for p in got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_skipping_on_the_bound_gives_the_plan_the_full_search_gives(cluster: Cluster) -> None:
    nodes, pods = cluster
    state = build_cluster(nodes, pods)
    result = plan_state(state, plan_id="1")
    if result.search is None or "upper bound" not in result.search.note:
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bound.Bound, "met", lambda *_: False)
        full = plan_state(state, plan_id="1", budget=20.0)
    assert result.placed == full.placed
    assert {n: p.annotations for n, p in result.nodes.items()} == {n: p.annotations for n, p in full.nodes.items()}


def test_the_room_left_on_the_gpus_bounds_pods_that_each_fit_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise AssertionError("the optimizing stage ran")

    monkeypatch.setattr(lns, "improve", fail)
    nodes = [node("a", status={0: [I(0, "7g.80gb")]}), node("b", status=FULL)]
    pods = [pod(f"w{i}", "7g.80gb", priority=1) for i in range(4)] + [pod(f"s{i}", "4g.40gb") for i in range(3)]
    state = build_cluster(nodes, pods)
    assert bound.placeable(state, Packer())[0] == Counter({1: 4, 0: 3})
    assert bound.capacity(state, frozenset({"nvidia.com/mig-7g.80gb", "nvidia.com/mig-4g.40gb"})) == 1
    limit = bound.Bound(state, Packer())
    assert limit.met(["default/w0"], 0)
    assert not limit.met(["default/s0"], 0)  # the higher priority could have had the GPU
    result = plan_state(state)
    assert [p.pod for p in result.placed] == ["default/w0"]
    assert result.search is not None and "upper bound" in result.search.note
