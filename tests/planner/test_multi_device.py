"""Pods with several MIG devices: counted as kube-scheduler counts them, placed whole on one node
(any of its GPUs, any mix of profiles) or not at all."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from nos.mig.layout import Instance as I
from nos.planner.checker import check_plan
from nos.planner.cluster import build_cluster
from nos.planner.plan import Device, Plan
from nos.planner.planner import plan
from tests.planner.factories import node, pod


def run(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], **kw: Any) -> Plan:
    result = plan(nodes, pods, **kw)
    assert check_plan(build_cluster(nodes, pods), result) == []
    return result


def devices(result: Plan, key: str) -> tuple[str, list[tuple[int, str]]]:
    placed = {p.pod: p for p in result.placed}[f"default/{key}"]
    return placed.node, sorted((d.gpu, d.profile) for d in placed.devices)


def test_two_containers_get_two_devices_on_one_node() -> None:
    nodes = [node("a", status={0: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod("pair", "1g.10gb", more=["1g.10gb"])])
    assert devices(result, "pair") == ("a", [(0, "1g.10gb"), (0, "1g.10gb")])
    assert Counter(i.profile for i in result.nodes["a"].gpus[0].planned)["1g.10gb"] >= 2


def test_mixed_profiles_spread_over_the_gpus_of_one_node() -> None:
    # each GPU has room for one of the two large devices only
    status = {0: [I(0, "4g.40gb", True)], 1: [I(4, "3g.40gb", True)]}
    nodes = [node("a", status=status), node("b", status={0: [I(0, "4g.40gb", True), I(4, "3g.40gb", True)]})]
    result = run(nodes, [pod("big", "3g.40gb", more=["4g.40gb"])])
    assert devices(result, "big") == ("a", [(0, "3g.40gb"), (1, "4g.40gb")])


def test_placed_whole_or_not_at_all() -> None:
    # a can host one 4g.40gb, b another: never split over nodes, and nothing is reconfigured for it
    nodes = [
        node("a", status={0: [I(4, "3g.40gb", True)]}),
        node("b", status={0: [I(4, "3g.40gb", True)]}),
    ]
    result = run(nodes, [pod("split", "4g.40gb", more=["4g.40gb"])])
    assert result.placed == []
    why = {u.pod: u.reason for u in result.unplaced}["default/split"]
    assert "all 2 of its MIG devices" in why
    assert result.changed_nodes == []


def test_init_containers_count_as_the_maximum_not_the_sum() -> None:
    # containers need one 1g.10gb; two init containers each ask 3g.40gb, one after the other
    nodes = [node("a", status={0: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod("job", "1g.10gb", init=["3g.40gb", "3g.40gb"])])
    assert [p for _, p in devices(result, "job")[1]] == ["1g.10gb", "3g.40gb"]


def test_a_container_asking_two_devices_is_still_reported() -> None:
    nodes = [node("a", status={0: [I(0, "7g.80gb")]})]
    result = run(nodes, [pod("greedy", "1g.10gb", mig_count=2)])
    assert "container main requests 2 MIG devices" in {u.pod: u.reason for u in result.unplaced}["default/greedy"]


def test_checker_rejects_a_missing_or_foreign_device() -> None:
    nodes = [node("a", status={0: [I(0, "7g.80gb")]})]
    pods = [pod("pair", "1g.10gb", more=["2g.20gb"])]
    result = run(nodes, pods)
    state = build_cluster(nodes, pods)
    (placed,) = result.placed
    short = dataclasses.replace(placed, extra=())
    assert any("asks" in e for e in check_plan(state, dataclasses.replace(result, placed=[short])))
    doubled = dataclasses.replace(placed, extra=(*placed.extra, Device(0, "1g.10gb", False)))
    assert check_plan(state, dataclasses.replace(result, placed=[doubled]))
