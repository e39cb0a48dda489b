"""The optimizing stage's sharper tools: pods no node could host alone get no column and are never
the target of a move, the MIP can hold columns and relax integrality, a move stops once it has
improved the plan, and the guided move (the whole-cluster MIP around the plan's disagreements with
the linear relaxation) finds what local moves do not."""

from __future__ import annotations

from typing import Any

import pytest

from nos.mig.layout import Instance as I
from nos.planner import lns, mip, optimize
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.mip import Mip
from nos.planner.planner import plan_state
from tests.planner.factories import flexible_and_pinned, node, pod


def test_a_node_hosts_a_pod_when_its_gpus_can_share_out_all_its_devices() -> None:
    nodes = [
        node("two", gpus=2, status={0: [], 1: []}),
        node("busy", status={0: [I(0, "1g.10gb", True)]}),
        node("spare", status={0: [I(0, "1g.10gb")]}),
    ]
    state = build_cluster(nodes, [])
    two, busy, spare = (state.nodes[n] for n in ("two", "busy", "spare"))

    def hosts(n: Any, *profiles: str) -> bool:
        return optimize.could_host(n, tuple(f"nvidia.com/mig-{p}" for p in profiles), (), n.free)

    assert hosts(two, "4g.40gb", "4g.40gb")  # one 4g per GPU
    assert not hosts(two, "4g.40gb", "4g.40gb", "4g.40gb")  # a GPU holds one 4g.40gb
    assert hosts(two, "7g.80gb", "3g.40gb", "3g.40gb")
    assert not hosts(busy, "7g.80gb")  # an in-use instance stays
    assert hosts(busy, "3g.40gb", "2g.20gb", "1g.10gb")
    assert hosts(spare, "7g.80gb")  # a free instance is no obstacle: it may go
    assert not optimize.could_host(two, ("nvidia.com/mig-1g.10gb",), (("cpu", 10**6),), two.free)  # cpu


def test_a_pod_no_node_could_host_alone_gets_no_column() -> None:
    nodes = [node("a", gpus=2, status={0: [], 1: []}, cpu="8")]
    pods = [
        pod("fits", "4g.40gb", more=["4g.40gb"]),
        pod("three", "4g.40gb", more=["4g.40gb", "4g.40gb"]),  # three 4g on two GPUs
        pod("hungry", "1g.10gb", cpu="16"),  # more cpu than the node has
    ]
    state = build_cluster(nodes, pods)
    n = state.nodes["a"]
    model = optimize.build(state, state.candidates, [n], {"a": n.free})
    assert {model.classes[cls][0].key for cls, _ in model.y_vars} == {"default/fits"}


def test_a_pod_no_node_could_host_alone_is_never_the_target_of_a_move(monkeypatch: pytest.MonkeyPatch) -> None:
    real = optimize.solve
    seen: set[str] = set()

    def solve(state: Any, pods: Any, *args: Any, **kw: Any) -> Any:
        seen.update(p.key for p in pods)
        return real(state, pods, *args, **kw)

    monkeypatch.setattr(optimize, "solve", solve)
    # every GPU has an in-use instance: the 7g of the highest priority fits nowhere, ever
    nodes = [node(f"n{i}", status={0: [I(0, "1g.10gb", True)]}, cpu="8") for i in range(80)]
    pods = [pod("big", "7g.80gb", priority=1000)]
    pods += [pod(f"p{i}", ("1g.10gb", "2g.20gb", "3g.40gb")[i % 3], cpu=str(1 + i % 3)) for i in range(400)]
    state = build_cluster(nodes, pods)
    result = plan_state(state, budget=1.0)  # 80 nodes: local moves only
    assert check_plan(state, result) == []
    assert "default/big" not in seen
    assert "default/big" in {u.pod for u in result.unplaced}


def test_held_columns_keep_their_values_and_the_relaxation_bounds_the_optimum() -> None:
    m = Mip()
    xs = [m.var(1.0) for _ in range(10)]
    m.row([(x, float(3 + i)) for i, x in enumerate(xs)], 40.0)  # items of weight 3..12 in a bag of 40
    value = {x: float(3 + i) for i, x in enumerate(xs)}
    free = m.solve([value], 5.0)
    assert free.optimal and sum(value[i] * free.values[i] for i in value) == 40.0
    held = m.solve([value], 5.0, fixed={xs[9]: 1.0, xs[8]: 1.0})  # 12 + 11 in the bag
    assert held.values[xs[9]] == 1.0 and held.values[xs[8]] == 1.0
    assert sum(value[i] * held.values[i] for i in value) == 40.0  # 12 + 11, and 17 of the others
    relaxed = m.relaxation(value, 5.0)
    assert relaxed is not None
    values, bound = relaxed
    assert bound >= 40.0 - 1e-6 and abs(sum(value[i] * values[i] for i in value) - bound) < 1e-6


def test_the_level_bound_holds_the_higher_priorities_at_what_the_plan_places() -> None:
    """One empty GPU: one 7g of priority 100, or seven 1g of priority 0, not both."""
    nodes = [node("a", status={0: []})]
    pods = [pod(f"big-{i}", "7g.80gb", priority=100) for i in range(2)]
    pods += [pod(f"small-{i}", "1g.10gb") for i in range(7)]
    state = build_cluster(nodes, pods)
    n = state.nodes["a"]
    model = optimize.build(state, state.candidates, [n], {"a": n.free})

    def bound(priority: int, held: dict[int, int]) -> float:
        solved = model.level_bound(priority, held, 5.0)
        assert solved is not None
        value, columns = solved
        assert abs(sum(columns[i] for i in model.placed[priority]) - value) < 1e-6  # its optimum
        return value

    assert abs(bound(100, {}) - 1.0) < 1e-6
    assert bound(0, {100: 1}) < 1.0  # with the 7g placed, no 1g fits
    assert abs(bound(0, {}) - 7.0) < 1e-6


def test_a_settling_run_returns_a_better_plan_than_its_start() -> None:
    m = Mip()
    xs = [m.var(1.0) for _ in range(30)]
    m.row([(x, float(7 + (i * 13) % 17)) for i, x in enumerate(xs)], 100.0)
    value = {x: float(7 + (i * 13) % 17) for i, x in enumerate(xs)}
    result = m.solve([value], 5.0, [0.0] * m.columns, settle=True)
    assert result.found and sum(value[i] * result.values[i] for i in value) > 0
    assert mip._wait_for_abandoned(30.0)


def test_the_guided_move_finds_what_local_moves_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local moves find nothing here (patched); the first guided move, from the greedy's plan,
    places the pinned pod the greedy left out."""
    calls: list[tuple[bool, int]] = []
    real = optimize.Model.solve

    def model_solve(self: optimize.Model, *args: Any, **kw: Any) -> optimize.Solution:
        solution = real(self, *args, **kw)
        calls.append((kw.get("fixed") is not None, len(solution.pods)))
        return solution

    monkeypatch.setattr(optimize, "solve", lambda *a, **kw: optimize.Solution())
    monkeypatch.setattr(optimize.Model, "solve", model_solve)
    state = build_cluster(*flexible_and_pinned())
    assert len(plan_state(state, optimize=False).placed) == 1
    result = plan_state(state)
    assert check_plan(state, result) == []
    assert len(result.placed) == 2
    assert calls[0] == (True, 2), calls  # the guided move did it


def test_pods_of_the_highest_priority_are_moved_by_guided_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the relaxation guides best (the highest priority), a move is a guided move that also
    frees the nodes chosen for its target; lower priorities get local moves."""
    local: list[set[int]] = []
    guided: list[int] = []
    real_solve, real_model_solve = optimize.solve, optimize.Model.solve

    def solve(state: Any, pods: Any, *args: Any, **kw: Any) -> Any:
        local.append({p.priority for p in pods})
        return real_solve(state, pods, *args, **kw)

    def model_solve(self: optimize.Model, *args: Any, **kw: Any) -> optimize.Solution:
        if kw.get("fixed") is not None:
            guided.append(len(kw["fixed"]))
            return optimize.Solution()  # finds nothing: the moves go on until they stall
        return real_model_solve(self, *args, **kw)

    monkeypatch.setattr(optimize, "solve", solve)
    monkeypatch.setattr(optimize.Model, "solve", model_solve)
    nodes = [node(f"n{i}", status={0: [I(0, "4g.40gb", True)], 1: []}, cpu="6") for i in range(20)]
    pods = [pod(f"p{i}", ("1g.10gb", "2g.20gb", "3g.40gb")[i % 3], cpu=str(1 + i % 4)) for i in range(150)]
    state = build_cluster(nodes, pods)
    result = plan_state(state, budget=1.5)
    assert check_plan(state, result) == []
    # the one from the greedy's plan, then moves (each freeing its nodes: fewer columns held)
    # until they stall, then the whole-cluster MIP
    stall = -(-lns.STALL_MOVES // lns.GUIDED_STALL_WEIGHT)
    assert len(guided) == 1 + stall and local == [], guided
    assert all(held < guided[0] for held in guided[1:])
