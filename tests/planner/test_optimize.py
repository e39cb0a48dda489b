"""The optimizing stage: better than the greedy where the greedy is myopic, never trading a higher
priority, within its budget, and falling back to the greedy plan when its own does not fit."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from nos.mig.layout import Instance as I
from nos.planner import bound, lns
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.plan import Plan
from nos.planner.planner import plan_state
from tests.planner.factories import flexible_and_pinned, node, pod
from tests.planner.test_properties import Cluster, clusters

WHOLE = {0: [I(0, "7g.80gb")]}


def run(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], **kw: Any) -> Plan:
    state = build_cluster(nodes, pods)
    result = plan_state(state, **kw)
    assert check_plan(state, result) == []
    return result


def by_priority(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], result: Plan) -> tuple[int, ...]:
    priority = {p.key: p.priority for p in build_cluster(nodes, pods).candidates}
    counts = Counter(priority[p.pod] for p in result.placed)
    return tuple(counts[p] for p in sorted(set(priority.values()), reverse=True))


def test_a_flexible_pod_leaves_the_only_node_a_pinned_pod_can_use() -> None:
    nodes, pods = flexible_and_pinned()
    greedy = run(nodes, pods, optimize=False)
    assert len(greedy.placed) == 1 and greedy.search is not None and greedy.search.stage == "greedy"
    result = run(nodes, pods)
    assert {p.pod: p.node for p in result.placed} == {"default/flex": "b", "default/pinned": "a"}
    assert result.search is not None and result.search.stage == "optimized" and result.search.optimal


def test_a_higher_priority_is_never_traded_for_more_pods() -> None:
    # the GPU holds one 7g or seven 1g: the 7g of priority 100 wins over seven pods of priority 0
    pods = [pod(f"small-{i}", "1g.10gb") for i in range(7)] + [pod("big", "7g.80gb", priority=100)]
    result = run([node("a", status={0: []})], pods)
    assert [p.pod for p in result.placed] == ["default/big"]
    assert result.search is not None and result.search.optimal


def test_several_devices_and_reconfiguration_count_in_the_optimum() -> None:
    # a pair of 3g devices fits node b only if b is reconfigured; node a already has them free
    nodes = [
        node("a", status={0: [I(0, "3g.40gb"), I(4, "3g.40gb")]}),
        node("b", status=WHOLE),
    ]
    result = run(nodes, [pod("pair", "3g.40gb", more=["3g.40gb"])])
    (placed,) = result.placed
    assert placed.node == "a" and all(d.existing for d in placed.devices)
    assert result.changed_nodes == [] and result.search is not None and result.search.optimal


def test_the_budget_bounds_the_search() -> None:
    nodes = [node(f"n{i}", status={0: [I(0, "4g.40gb", True)], 1: []}, cpu="6") for i in range(30)]
    pods = [pod(f"p{i}", ("1g.10gb", "2g.20gb", "3g.40gb")[i % 3], cpu=str(1 + i % 4)) for i in range(200)]
    state = build_cluster(nodes, pods)
    started = time.perf_counter()
    result = plan_state(state, budget=0.2)
    took = time.perf_counter() - started
    assert check_plan(state, result) == []
    assert took < 3.0, f"budget 0.2 s, took {took:.1f} s"  # generous: this machine is shared
    greedy = plan_state(state, optimize=False)
    assert len(result.placed) >= len(greedy.placed)


def test_local_moves_that_stall_hand_the_time_to_the_whole_cluster_mip(monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``STALL_MOVES`` local moves in a row that improve nothing (and no guided move left to
    try from that plan), the whole-cluster MIP runs with (nearly) all the time left, not a fixed
    share."""
    from nos.planner import optimize

    local: list[float] = []
    whole: list[tuple[bool, float]] = []
    real = optimize.Model.solve

    def solve(state: Any, pods: Any, nodes: Any, free: Any, limit: float, *args: Any, **kw: Any) -> Any:
        local.append(limit)
        return optimize.Solution()  # a local move that finds nothing

    def model_solve(self: optimize.Model, limit: float, *args: Any, **kw: Any) -> Any:
        whole.append((kw.get("fixed") is not None, limit))
        if kw.get("fixed") is not None:
            return optimize.Solution()  # a guided move that finds nothing
        return real(self, limit, *args, **kw)

    monkeypatch.setattr(optimize, "solve", solve)
    monkeypatch.setattr(optimize.Model, "solve", model_solve)
    nodes = [node(f"n{i}", status={0: [I(0, "4g.40gb", True)], 1: []}, cpu="6") for i in range(30)]
    pods = [pod(f"p{i}", ("1g.10gb", "2g.20gb", "3g.40gb")[i % 3], cpu=str(1 + i % 4)) for i in range(200)]
    # placed by every plan: the pending pods are of a lower priority, where each move counts one
    # (a local move, or a guided one by that priority's relaxation)
    pods.append(pod("first", "1g.10gb", priority=100))
    state = build_cluster(nodes, pods)
    result = plan_state(state, budget=3.0)
    assert check_plan(state, result) == []
    guided = [limit for held, limit in whole if held]
    assert guided and all(limit <= lns.GUIDED_SECONDS for limit in guided), whole
    # the guided move from the greedy's plan, then the moves until the stall; no guided move
    # after it (the plan is where the last one started)
    assert len(local) + len(guided) - 1 == lns.STALL_MOVES, (local, whole)
    final = [limit for held, limit in whole if not held]
    assert len(final) == 1 and final[0] > 1.5, whole  # the moves found nothing at once: most of the 3 s
    assert whole[-1][0] is False  # the whole-cluster MIP comes last


def test_falls_back_to_the_greedy_plan_when_its_own_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(state: Any, pods: Any, placements: Any, deadline: float, *args: Any) -> lns.Outcome:
        # every pod on GPU 0 of node a as a new 7g: cannot fit
        bad = {p.key: ("a", [(0, "nvidia.com/mig-7g.80gb", None)]) for p in pods}
        return lns.Outcome(bad, True, "", 1, 1)

    monkeypatch.setattr(lns, "improve", broken)
    monkeypatch.setattr(bound.Bound, "met", lambda *_: False)  # the greedy's plan is optimal here: no stage else
    nodes = [node("a", status={0: []}), node("b", status=WHOLE)]
    pods = [pod("x", "7g.80gb"), pod("y", "7g.80gb"), pod("z", "7g.80gb")]
    result = run(nodes, pods)
    assert result.search is not None and result.search.stage == "greedy" and "did not fit" in result.search.note
    assert len(result.placed) == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_the_optimizing_stage_never_does_worse_than_the_greedy(cluster: Cluster) -> None:
    nodes, pods = cluster
    state = build_cluster(nodes, pods)
    greedy = plan_state(state, optimize=False)
    result = plan_state(state)
    assert check_plan(state, result) == []
    assert by_priority(nodes, pods, result) >= by_priority(nodes, pods, greedy)
    if result.search is not None and result.search.optimal:
        assert len(result.changed_nodes) <= len(greedy.changed_nodes) or by_priority(nodes, pods, result) > by_priority(
            nodes, pods, greedy
        )
