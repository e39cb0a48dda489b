"""``nos.sim.greedy``: the original nos' planner, the baseline of ``nos simulate`` and the benchmarks."""

from __future__ import annotations

from collections import Counter

from benchmarks.generate import Spec, generate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance as I
from nos.mig.layout import layout_errors
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.sim.greedy import _place, default_geometries, plan_greedy, plan_greedy_state, reachable, reachable_placed
from tests.mig.reference import every_layout, reference_layouts
from tests.planner.factories import node, pod

A100 = default_catalog().model("A100-80GB")


def test_default_geometries_are_maximal_and_placeable() -> None:
    geometries = default_geometries(A100)
    assert geometries[0] == (("7g.80gb", 1),)  # coarse first, like the original's table
    assert (("1g.10gb", 7),) in geometries
    assert all("+" not in p for g in geometries for p, _ in g)
    assert (("1g.10gb", 6),) not in geometries  # partial layouts are not geometries
    assert all(reachable(A100, (), dict(g)) for g in geometries)


def test_greedy_is_blind_to_placement() -> None:
    """A used 1g at slot 1 keeps the counts of {4g.40gb: 1, 1g.10gb: 3} but forbids the 4g."""
    nodes = [node("n", status={0: [I(0, "1g.10gb"), I(1, "1g.10gb", True), I(2, "2g.20gb"), I(4, "3g.40gb")]})]
    state = build_cluster(nodes, [pod("p-0", "4g.40gb")])
    plan = plan_greedy_state(state)
    assert len(plan.placed) == 1  # the original thinks the pod fits
    assert reachable_placed(state, plan) == 0  # but the layout cannot be reached
    assert check_plan(state, plan)  # and the checker says so


def test_greedy_original_lacking_ignores_pods_competing_for_free_devices() -> None:
    """One free 1g.10gb somewhere: in the original no 1g.10gb pod lacks anything, so nothing is
    repartitioned and only one of two pods runs; the cumulative variant repartitions."""
    layouts = {0: [I(0, "1g.10gb"), I(1, "1g.10gb", True), I(2, "2g.20gb", True), I(4, "3g.40gb", True)]}
    nodes = [node("n", status={**layouts, 1: [I(0, "7g.80gb")]})]
    pods = [pod(f"p-{i}", "1g.10gb") for i in range(2)]
    assert len(plan_greedy(nodes, pods).placed) == 1
    state = build_cluster(nodes, pods)
    cumulative = plan_greedy_state(state, lacking="cumulative")
    assert reachable_placed(state, cumulative) == 2
    assert check_plan(state, cumulative) == []


def test_greedy_plan_is_sound_when_reachable() -> None:
    nodes, pods = generate(Spec("t", 3, 15, seed=1))
    state = build_cluster(nodes, pods)
    plan = plan_greedy_state(state)
    assert len(plan.placed) + len(plan.unplaced) == len(state.candidates)
    if reachable_placed(state, plan) == len(plan.placed):
        assert check_plan(state, plan) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_materialized_counts_are_placed_exactly_when_some_placement_exists(data: st.DataObject) -> None:
    """The greedy plans counts; its layouts are placed by the one placement search whenever some
    placement exists (checked against the brute-force oracle)."""
    layouts = every_layout(A100)
    used = tuple(sorted(i for i in data.draw(st.sampled_from(layouts)) if data.draw(st.booleans())))
    free = tuple(sorted(data.draw(st.sampled_from(layouts))))
    target = Counter(i.profile for i in data.draw(st.sampled_from(layouts)))
    rest = tuple(sorted(target.items()))
    got = _place(A100, used, free, rest)
    fits = [x for x in reference_layouts(A100, used) if Counter(i.profile for i in x[len(used) :]) == target]
    assert (got is None) == (not fits)
    if got is not None:
        assert not layout_errors(A100, got) and set(used) <= set(got)
        assert Counter(i.profile for i in got) == target + Counter(i.profile for i in used)
