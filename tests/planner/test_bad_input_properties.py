"""Issue 10, as a property: whatever junk sits in nos' annotations and GPU labels of some nodes, the
planner never raises, plans no GPU a node does not have, never writes a frozen node or GPU's spec,
and what it writes decodes cleanly; the healthy nodes are still planned (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.contract.annotations import decode_spec
from nos.mig.layout import Instance
from nos.planner.checker import check_plan, isolate_failures
from nos.planner.cluster import MAX_GPUS_PER_NODE, build_cluster
from nos.planner.planner import plan_state
from tests.planner.factories import node, pod

D = "nos.nebuly.com/"
PROFILES = ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb", "9g.99gb", "1g.10gb_me"]
INDICES = st.one_of(st.integers(0, 3), st.sampled_from([9, 63, 64, 10**6, 10**12]))
VALUES = st.sampled_from(
    ["1", "2", "7", "99", "-1", "x", "", "1g.10gb@0,1g.10gb@0", "1g.10gb@0,2g.20gb@0", "3g.40gb@4"]
)


@st.composite
def junk(draw: st.DrawFn) -> dict[str, str]:
    out: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 4))):
        side = draw(st.sampled_from(["spec", "status"]))
        index = draw(INDICES)
        profile = draw(st.sampled_from(PROFILES))
        key = draw(
            st.sampled_from(
                [
                    f"{D}{side}-gpu-{index}-{profile}" + ("-free" if side == "status" else ""),
                    f"{D}{side}-placement-gpu-{index}",
                    f"{D}status-error-gpu-{index}",
                    f"{D}{side}-gpu-x-{profile}",
                ]
            )
        )
        out[key] = draw(VALUES)
    return out


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = []
    for n in range(draw(st.integers(2, 4))):
        status = {g: [Instance(0, "7g.80gb", draw(st.booleans()))] for g in range(draw(st.integers(1, 2)))}
        bad = draw(st.booleans())
        labels = {}
        if bad and draw(st.booleans()):
            labels["nvidia.com/gpu.count"] = draw(st.sampled_from(["0", "1", "64", "65", "1000000", "²", "-1", ""]))
        extra = draw(junk()) if bad else {}
        n_obj = node(f"n{n}", status=status, labels=labels, extra_annotations=extra)
        if bad and draw(st.booleans()):
            n_obj["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = "1"
        nodes.append(n_obj)
    pods = [
        pod(f"p{i}", draw(st.sampled_from(["1g.10gb", "3g.40gb", "7g.80gb"]))) for i in range(draw(st.integers(0, 6)))
    ]
    return nodes, pods


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_bad_annotations_never_break_or_leak_into_the_plan(
    cluster: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    nodes, pods = cluster
    state = build_cluster(nodes, pods)
    for ns in state.nodes.values():
        assert len(ns.gpus) <= MAX_GPUS_PER_NODE
    plan = plan_state(state, plan_id="x")
    assert isolate_failures(state, plan) == []
    assert check_plan(state, plan) == []
    for name, np in plan.nodes.items():
        ns = state.nodes[name]
        if ns.frozen:
            assert not np.write
        if not np.write:
            continue
        spec = decode_spec(np.annotations)
        frozen = {g.index for g in ns.gpus if g.frozen}
        assert all(p.gpu in frozen for p in spec.problems), spec.problems
        assert set(spec.gpus) <= {g.index for g in ns.gpus}
