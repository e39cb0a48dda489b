"""A ``settled`` reconcile is a fixed point: on the same inputs the next reconcile does exactly the same
nothing (what lets ``nos simulate`` skip it), over random GPUs, in-use sets and specs, malformed ones
included."""

from __future__ import annotations

import asyncio

from hypothesis import event, given
from hypothesis import strategies as st

from nos.agent.agent import MigAgent, ReconcileResult
from nos.config import AgentConfig
from nos.contract.annotations import SPEC_PREFIX, encode_spec
from nos.kube.fake.memory import MemoryKube
from nos.mig.layout import Instance
from tests.agent.helpers import node
from tests.agent.test_properties import PROPS, World, any_instances, worlds

STEPS = st.sampled_from([0, 5, 400])
"""Seconds between reconciles: at once, within a plugin restart's settling window, past it."""
BAD_SPECS = st.sampled_from([{}, {f"{SPEC_PREFIX}0-1g.10gb": "lots"}, {f"{SPEC_PREFIX}9-1g.10gb": "1"}])


def _same(a: ReconcileResult, b: ReconcileResult) -> bool:
    return (a.plan_id, a.plans, a.status, a.notes, a.ops) == (b.plan_id, b.plans, b.status, b.notes, b.ops)


@PROPS
@given(worlds(), any_instances, st.booleans(), BAD_SPECS, st.booleans(), st.lists(STEPS, min_size=5, max_size=5))
def test_settled_reconcile_is_a_fixed_point(
    w: World, spec: list[Instance], by_counts: bool, bad: dict[str, str], plugin_restarts: bool, steps: list[int]
) -> None:
    """After a settled reconcile, the next one on the same inputs (seconds or minutes later) is settled
    too, with the same result, and writes nothing, tells nothing and does nothing on the GPUs."""
    annotations = encode_spec({0: [i for i in spec if i.profile in w.model.profiles]}, "plan-3")
    if by_counts:
        annotations = {k: v for k, v in annotations.items() if "placement" not in k}
    annotations.update(bad)
    kube = MemoryKube()
    kube.add_node(node(annotations=annotations))
    # with restarts there is no plugin pod: a change ends in a failed restart, then its settling window
    config = AgentConfig(restart_device_plugin=plugin_restarts)
    config.device_plugin.find_attempts = 1
    now = [0.0]

    async def no_wait(_: float) -> None:
        return None

    async def scenario() -> None:
        agent = MigAgent("n1", w.nvml, kube, w.pods, config, clock=lambda: now[0], sleep=no_wait)
        try:
            previous: ReconcileResult | None = None
            for step in steps:
                now[0] += step
                state = (kube.store.resource_version, len(w.nvml.log), agent.events_told)
                result = await agent.reconcile_once()
                if previous is not None and previous.settled:
                    assert result.settled and _same(result, previous)
                    assert result.patch == {} and result.applied is None and result.device_plugin_restarted is None
                    assert (kube.store.resource_version, len(w.nvml.log), agent.events_told) == state
                previous = result
            if not plugin_restarts:
                assert previous is not None and previous.settled  # a few reconciles on unchanged inputs settle
            event(f"settled at the end: {previous is not None and previous.settled}")
        finally:
            agent.close()

    asyncio.run(scenario())


def test_a_reconcile_that_changes_something_is_not_settled() -> None:
    from nos.gpu.simulated import SimulatedNvml
    from tests.agent.test_properties import StaticPodResources

    nvml = SimulatedNvml.new("A100-80GB")
    kube = MemoryKube()
    kube.add_node(node(annotations=encode_spec({0: [Instance(0, "7g.80gb")]}, "p1")))
    agent = MigAgent("n1", nvml, kube, StaticPodResources(), AgentConfig(restart_device_plugin=False))

    async def scenario() -> list[ReconcileResult]:
        results = [await agent.reconcile_once() for _ in range(3)]
        two = {**encode_spec({0: [Instance(0, "3g.40gb"), Instance(4, "3g.40gb")]}, "p2")}
        kube.store.merge_patch("nodes", "n1", {"metadata": {"annotations": {**two, f"{SPEC_PREFIX}0-7g.80gb": None}}})
        return [*results, await agent.reconcile_once()]

    try:
        first, second, third, fourth = asyncio.run(scenario())
    finally:
        agent.close()
    assert first.applied is not None and first.patch and not first.settled  # created the instance, reported
    assert second.settled and third.settled  # then nothing to do
    assert fourth.applied is not None and not fourth.settled  # a new spec: applied
