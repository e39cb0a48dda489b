"""The simulated scheduler keeps its pending pods in one queue per resource, merged in queue order:
the pods a pass looks at, and their order, are exactly those of one queue walked from the start that
passes over a resource once no node has room for it, over random pods, layouts, cpu and priorities."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nos.sim import cluster as sim_cluster
from nos.sim.clock import VirtualClock
from nos.sim.cluster import SimCluster
from nos.sim.nodes import SimNode, simulated_nvml
from nos.sim.scheduler import queue_order
from nos.sim.workload import SimPod
from tests.sim.helpers import pod, tiny

PROFILES = ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"]
LAYOUTS = [{"1g.10gb": 7}, {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}, {"3g.40gb": 2}, {"7g.80gb": 1}]

pods_ = st.lists(
    st.tuples(
        st.sampled_from(PROFILES),
        st.sampled_from([0, 0, 30, 60, 600]),  # arrivals, several at once
        st.sampled_from([0, 0, 5]),  # priority
        st.sampled_from([1, 8, 40]),  # cpu: some pods fit no node by cpu
        st.sampled_from([60, 900]),  # durations: some finish and free room
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pods_, st.sampled_from(LAYOUTS), st.integers(1, 3))
def test_a_pass_looks_at_the_pods_of_one_queue_in_order(
    monkeypatch: pytest.MonkeyPatch, specs: list[tuple[str, int, int, int, int]], layout: dict[str, int], count: int
) -> None:
    passes: list[list[tuple[SimPod, bool]]] = []
    """Per pass: the pods looked at and whether some node had GPU room for the pod's resource."""
    pending_at_start: list[list[SimPod]] = []
    real_choose = sim_cluster.choose_node

    def choose(p: SimPod, nodes: list[SimNode]) -> Any:
        node = real_choose(p, nodes)
        passes[-1].append((p, node is not None or any(n.gpu_room(p.resource) for n in nodes)))
        return node

    monkeypatch.setattr(sim_cluster, "choose_node", choose)
    scenario = tiny(
        [pod(f"p{i:02d}", *spec[:2], duration=spec[4], cpu=spec[3], priority=spec[2]) for i, spec in enumerate(specs)],
        layout=layout,
        count=count,
        gpus=2,
        cpu=64,
    )
    clock = VirtualClock()
    cluster = SimCluster(scenario, scenario.all_pods(), clock, static=True, nvml_factory=simulated_nvml)
    real_schedule = cluster.schedule

    def schedule() -> None:
        passes.append([])
        pending_at_start.append(sorted(cluster.pending.values(), key=queue_order))
        real_schedule()

    cluster.schedule = schedule  # type: ignore[method-assign]
    asyncio.run(clock.run_until(3600))
    assert passes
    event(f"a pass looked at more than one pod: {any(len(p) > 1 for p in passes)}")
    for looked, pending in zip(passes, pending_at_start, strict=True):
        no_room: set[str] = set()
        expected: list[SimPod] = []
        outcome = dict((id(p), room) for p, room in looked)
        for p in pending:  # one queue in order, a resource without room passed over from then on
            if p.resource in no_room:
                continue
            expected.append(p)
            if not outcome.get(id(p), True):
                no_room.add(p.resource)
        assert [p for p, _ in looked] == expected
