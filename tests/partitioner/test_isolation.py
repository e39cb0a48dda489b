"""Issue 10 findings 2, 3 and 7: one bad node never stops the cluster, GPUs that do not exist are
never planned, nodes whose agent has not reported are frozen. Partitioner cycles run on MemoryKube."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner

from nos.cli.main import cli
from nos.config import PartitionerConfig
from nos.contract.annotations import SPEC_PLAN, decode_spec
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance as I
from nos.partitioner.controller import Partitioner
from nos.planner.checker import ANNOTATIONS_LIMIT_BYTES, check_plan, isolate_failures, node_errors
from nos.planner.cluster import MAX_GPUS_PER_NODE, build_cluster
from nos.planner.planner import plan_state
from tests.partitioner.test_controller import Clock
from tests.planner.factories import node, pod

D = "nos.nebuly.com/"
BAD_SPECS: dict[str, dict[str, str]] = {
    "placement disagrees with a hand-added count": {
        D + "spec-placement-gpu-0": "7g.80gb@0",
        D + "spec-gpu-0-7g.80gb": "1",
        D + "spec-gpu-0-1g.10gb": "1",
    },
    "negative count": {D + "spec-gpu-0-1g.10gb": "-1"},
    "duplicated placement": {D + "spec-placement-gpu-0": "1g.10gb@0,1g.10gb@0", D + "spec-gpu-0-1g.10gb": "2"},
    "unknown profile": {D + "spec-gpu-0-9g.99gb": "1"},
    "impossible count": {D + "spec-gpu-0-1g.10gb": "99"},
    "overlapping placements": {
        D + "spec-placement-gpu-0": "1g.10gb@0,2g.20gb@0",
        D + "spec-gpu-0-1g.10gb": "1",
        D + "spec-gpu-0-2g.20gb": "1",
    },
}


def _cluster(bad: dict[str, Any]) -> MemoryKube:
    kube = MemoryKube()
    kube.add_node(node("bad", status={0: [I(0, "7g.80gb")]}, spec_matches_status=False, extra_annotations=bad))
    kube.add_node(node("good", status={0: [I(0, "7g.80gb")]}))
    kube.add_pod(pod("p1", "1g.10gb"))
    return kube


async def _plan_once(kube: MemoryKube) -> Any:
    clock = Clock()
    part = Partitioner(kube, clock, PartitionerConfig(batch_window_idle_seconds=0))
    return await part.cycle(), part  # an idle window of 0 closes the batch at once


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
async def test_a_malformed_spec_on_one_node_does_not_stop_the_others(case: str) -> None:
    kube = _cluster(BAD_SPECS[case])
    result, part = await _plan_once(kube)
    assert result.plan is not None and result.written == ["good"]
    good = (await kube.get("nodes", "good"))["metadata"]["annotations"]
    assert decode_spec(good).gpus[0].profile_counts()["1g.10gb"] >= 1 and good[SPEC_PLAN] == result.plan.plan_id
    bad = (await kube.get("nodes", "bad"))["metadata"]["annotations"]
    for key, value in BAD_SPECS[case].items():
        assert bad[key] == value  # frozen: kept verbatim
    assert [e.reason for e in kube.events if e.regarding.name == "bad"] == ["GpuFrozen"]
    assert part.frozen == (0, 1)
    await part.cycle()  # the same problem is not announced again
    assert [e.reason for e in kube.events if e.regarding.name == "bad"] == ["GpuFrozen"]


def test_nos_plan_reports_a_malformed_node_under_problems_and_plans_the_rest(tmp_path: Any) -> None:
    import yaml

    snap = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            node("bad", status={0: [I(0, "7g.80gb")]}, extra_annotations=BAD_SPECS["negative count"]),
            node("good", status={0: [I(0, "7g.80gb")]}),
            pod("p1", "1g.10gb"),
        ],
    }
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump(snap))
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "Problems" in result.stdout and "spec-gpu-0-1g.10gb" in result.stdout


def test_a_node_whose_plan_fails_the_check_is_left_out_and_the_rest_is_written() -> None:
    state = build_cluster(
        [node("a", status={0: [I(0, "7g.80gb")]}), node("b", status={0: [I(0, "7g.80gb")]})],
        [pod("p1", "1g.10gb"), pod("p2", "1g.10gb")],
    )
    plan = plan_state(state, plan_id="x")
    assert check_plan(state, plan) == []
    planned_on = {p.node for p in plan.placed}
    victim = sorted(planned_on)[0]
    plan.nodes[victim].annotations[D + "spec-gpu-0-1g.10gb"] = "lots"  # a planner bug on one node
    assert set(node_errors(state, plan)) == {victim}
    assert isolate_failures(state, plan) == []
    assert plan.nodes[victim].write is False and plan.nodes[victim].frozen
    assert all(p.node != victim for p in plan.placed)
    assert any(victim in p for p in plan.problems)
    other = ({"a", "b"} - {victim}).pop()
    assert plan.nodes[other].write or other not in planned_on


def test_spec_for_a_gpu_beyond_the_count_is_not_planned() -> None:
    n = node("n", gpus=1, status={0: [I(0, "7g.80gb")]}, extra_annotations={D + "spec-gpu-9-7g.80gb": "5"})
    state = build_cluster([n], [pod("p1", "7g.80gb")])
    assert [g.index for g in state.nodes["n"].gpus] == [0]
    assert any("GPU 9" in p for p in state.problems)
    plan = plan_state(state, plan_id="x")
    assert check_plan(state, plan) == []
    assert all(p.gpu == 0 for p in plan.placed)
    assert not any(k.startswith(D + "spec-gpu-9") for k in plan.nodes["n"].annotations)


@pytest.mark.parametrize(
    "labels, annotations",
    [
        ({"nvidia.com/gpu.count": "1000000"}, {}),
        ({"nvidia.com/gpu.count": "²"}, {}),
        ({}, {D + "status-placement-gpu-99999999999": "7g.80gb@0:free"}),
    ],
)
def test_absurd_gpu_counts_and_indices_freeze_the_node_at_once(
    labels: dict[str, str], annotations: dict[str, str]
) -> None:
    n = node("n", status={0: [I(0, "7g.80gb")]}, labels=labels, extra_annotations=annotations)
    state = build_cluster([n, node("ok", status={0: [I(0, "7g.80gb")]})], [pod("p1", "1g.10gb")])
    assert state.nodes["n"].frozen and state.nodes["n"].gpus == []
    plan = plan_state(state, plan_id="x")
    assert check_plan(state, plan) == [] and not plan.nodes["n"].write
    assert [p.node for p in plan.placed] == ["ok"]


def test_a_huge_spec_index_is_dropped_without_building_a_gpu() -> None:
    n = node("n", gpus=2, status={0: [I(0, "7g.80gb")]}, extra_annotations={D + "spec-gpu-999999999-7g.80gb": "1"})
    started = time.perf_counter()
    state = build_cluster([n], [])
    assert len(state.nodes["n"].gpus) == 2 <= MAX_GPUS_PER_NODE
    assert time.perf_counter() - started < 5  # generous: it used to build a billion GPUs


def test_a_plan_over_the_annotation_size_limit_is_not_written() -> None:
    filler = {f"example.com/note-{i}": "x" * 1000 for i in range(ANNOTATIONS_LIMIT_BYTES // 1000)}
    big = node("big", status={0: [I(0, "7g.80gb")]}, extra_annotations=filler)
    full = node("full", status={0: [I(0, "7g.80gb", True)]})
    state = build_cluster([big, full], [pod("p1", "1g.10gb")])
    plan = plan_state(state, plan_id="x")
    assert plan.nodes["big"].write and [p.node for p in plan.placed] == ["big"]
    assert "limit" in node_errors(state, plan)["big"][0]
    assert isolate_failures(state, plan) == []
    assert plan.nodes["big"].write is False and plan.placed == []
    assert "limit" in plan.unplaced[0].reason


def test_a_node_advertising_mig_devices_without_status_is_frozen_until_its_agent_reports() -> None:
    n = node("n", gpus=1)
    n["status"]["allocatable"]["nvidia.com/mig-3g.40gb"] = "2"
    state = build_cluster([n], [pod("p1", "7g.80gb")])
    assert state.nodes["n"].frozen and "has not reported" in state.nodes["n"].frozen
    plan = plan_state(state, plan_id="x")
    assert not plan.nodes["n"].write and plan.placed == []
    n["metadata"]["annotations"].update(
        {
            D + "status-placement-gpu-0": "3g.40gb@0:used,3g.40gb@4:free",
            D + "status-gpu-0-3g.40gb-used": "1",
            D + "status-gpu-0-3g.40gb-free": "1",
        }
    )
    state = build_cluster([n], [pod("p1", "7g.80gb")])
    assert not state.nodes["n"].frozen
