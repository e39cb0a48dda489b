"""Invariants of the planner over random clusters (hypothesis), checked by the independent checker."""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance
from nos.mig.placement import enumerate_layouts
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.planner import plan
from tests.planner.factories import A30, A100, H100, node, pod

Cluster = tuple[list[dict[str, Any]], list[dict[str, Any]]]
PRODUCTS = {A100: "A100-80GB", H100: "H100-80GB", A30: "A30-24GB"}


@cache
def layouts(model: str) -> list[tuple[Instance, ...]]:
    return list(enumerate_layouts(default_catalog().model(model)))


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    nodes = []
    offered: set[str] = set()
    for n in range(draw(st.integers(1, 4))):
        product = draw(st.sampled_from(sorted(PRODUCTS)))
        model = default_catalog().model(PRODUCTS[product])
        offered |= {p for p in model.profiles if "+" not in p}
        status = {}
        for g in range(draw(st.integers(1, 3))):
            if draw(st.booleans()):
                lay = draw(st.sampled_from(layouts(model.name)))
                status[g] = [Instance(i.start, i.profile, draw(st.booleans())) for i in lay]
            else:
                status[g] = []
        cpu = str(draw(st.integers(2, 16)))
        nodes.append(node(f"n{n}", product, gpus=len(status), status=status, cpu=cpu))
    profiles = [*sorted(offered), "3g.20gb"]
    pods = [
        pod(
            f"p{i}",
            draw(st.sampled_from(profiles)),
            priority=draw(st.sampled_from([0, 0, 10])),
            cpu=str(draw(st.integers(1, 4))),
            created=f"2026-11-29T10:00:{i:02d}Z",
            more=draw(st.lists(st.sampled_from(profiles), max_size=2)) if draw(st.integers(0, 4)) == 0 else (),
        )
        for i in range(draw(st.integers(0, 14)))
    ]
    return nodes, pods


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_every_plan_passes_the_independent_check(cluster: Cluster) -> None:
    nodes, pods = cluster
    result = plan(nodes, pods)
    assert check_plan(build_cluster(nodes, pods), result) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_plans_are_deterministic_and_stable(cluster: Cluster) -> None:
    nodes, pods = cluster
    first = plan(nodes, pods)
    assert plan(nodes, pods).to_json() == first.to_json()
    # used instances are exactly preserved in every planned layout
    for name, np in first.nodes.items():
        for g in np.gpus:
            assert {i for i in g.current if i.used} <= set(g.planned), (name, g.index)
