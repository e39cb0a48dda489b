"""Properties of reconcile + apply + report over random GPUs, in-use sets and specs."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nos.agent.agent import AgentConfig, MigAgent
from nos.agent.apply import Applier
from nos.agent.reconcile import Desired, plan_gpu
from nos.contract.annotations import decode_status, encode_spec
from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import Instance, layout_errors
from tests.agent.agent_fakes import Crash, FakeKube, FakeNvml, node

MODELS = [default_catalog().model(m) for m in ("A100-80GB", "A30-24GB")]


class StaticPodResources:
    def __init__(self) -> None:
        self.devices: dict[str, set[str]] = {}

    def allocated(self) -> dict[str, set[str]]:
        return {k: set(v) for k, v in self.devices.items()}


@st.composite
def random_layout(draw: st.DrawFn, model: GpuModel, base: tuple[Instance, ...] = ()) -> tuple[Instance, ...]:
    """A valid layout extending ``base``: random candidates added when they keep it valid."""
    layout = list(base)
    names = sorted(model.profiles)
    for _ in range(draw(st.integers(0, 8))):
        cand = Instance(draw(st.integers(0, model.memory_slots - 1)), draw(st.sampled_from(names)))
        if not layout_errors(model, [*layout, cand]):
            layout.append(cand)
    return tuple(sorted(layout))


@dataclass
class World:
    model: GpuModel
    nvml: FakeNvml
    in_use: set[int]
    used_layout: tuple[Instance, ...]
    pods: StaticPodResources


@st.composite
def worlds(draw: st.DrawFn) -> World:
    model = draw(st.sampled_from(MODELS))
    nvml = FakeNvml(model.name)
    pods = StaticPodResources()
    in_use: set[int] = set()
    used: list[Instance] = []
    for inst in draw(random_layout(model)):
        half = draw(st.integers(0, 5)) == 0
        gi = nvml.add(0, inst.profile, inst.start, with_ci=not half)
        if not half and draw(st.booleans()):
            in_use.add(gi.gi_id)
            used.append(Instance(inst.start, inst.profile, True))
            if draw(st.booleans()):  # allocated to a pod, or only running processes
                pods.devices.setdefault("nvidia.com/mig-" + inst.profile.split("+")[0], set()).update(gi.device_uuids)
            else:
                nvml.busy[0].add(gi.gi_id)
    return World(model, nvml, in_use, tuple(sorted(used)), pods)


def instances_of(w: World) -> dict[int, tuple[str, int]]:
    return {g.gi_id: (g.profile, g.start) for g in w.nvml.gpu_instances(0)}


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(worlds(), st.data())
def test_in_use_never_destroyed_and_reachable_placement_spec_reached_exactly(w: World, data: st.DataObject) -> None:
    target = data.draw(random_layout(w.model, tuple(i.freed() for i in w.used_layout)))
    before = instances_of(w)
    p = plan_gpu(
        w.model,
        0,
        Desired(dict(Counter(i.profile for i in target)), target),
        w.nvml.gpu_instances(0),
        w.in_use,
    )
    assert not any(op.kind == "destroy" and op.gi_id in w.in_use for op in p.ops)
    assert p.skipped == ()
    result = Applier(w.nvml).apply(p.ops)
    assert not result.failures
    after = instances_of(w)
    assert all(after[i] == before[i] for i in w.in_use)
    assert w.nvml.layout(complete_only=False) == target
    # free instances the spec keeps at the same place are never recreated (same GI id)
    kept = {gid for gid, (prof, start) in before.items() if Instance(start, prof) in target}
    assert kept <= set(after)


@PROPS
@given(worlds(), st.data())
def test_reachable_counts_spec_reached_exactly(w: World, data: st.DataObject) -> None:
    target = data.draw(random_layout(w.model, tuple(i.freed() for i in w.used_layout)))
    counts = dict(Counter(i.profile for i in target))
    p = plan_gpu(w.model, 0, Desired(counts), w.nvml.gpu_instances(0), w.in_use)
    assert p.skipped == ()
    assert not any(op.kind == "destroy" and op.gi_id in w.in_use for op in p.ops)
    assert not Applier(w.nvml).apply(p.ops).failures
    assert Counter(i.profile for i in w.nvml.layout(complete_only=False)) == counts
    assert set(instances_of(w)) >= w.in_use


profile_names = st.sampled_from(sorted({p for m in MODELS for p in m.profiles} | {"1g.5gb", "9g.99gb"}))
any_instances = st.lists(st.builds(Instance, st.integers(0, 8), profile_names), max_size=9)


@PROPS
@given(worlds(), any_instances, st.booleans())
def test_any_spec_never_destroys_in_use_and_leaves_a_valid_layout(
    w: World, spec: list[Instance], by_counts: bool
) -> None:
    before = instances_of(w)
    desired = Desired(dict(Counter(i.profile for i in spec)), None if by_counts else tuple(sorted(spec)))
    p = plan_gpu(w.model, 0, desired, w.nvml.gpu_instances(0), w.in_use)
    assert not any(op.kind == "destroy" and op.gi_id in w.in_use for op in p.ops)
    assert not layout_errors(w.model, p.target)
    result = Applier(w.nvml).apply(p.ops)
    assert not result.failures, result.failures
    after = instances_of(w)
    assert all(after[i] == before[i] for i in w.in_use)
    assert w.nvml.layout(complete_only=False) == tuple(i.freed() for i in p.target)
    # everything requested is either in the target or reported as skipped
    if not by_counts:
        skipped_items = {s.item for s in p.skipped}
        for i in spec:
            assert (
                Instance(i.start, i.profile) in p.target
                or Instance(i.start, i.profile, True) in p.target
                or (f"{i.profile}@{i.start}" in skipped_items)
            )
    # a second plan on the result changes nothing
    again = plan_gpu(w.model, 0, desired, w.nvml.gpu_instances(0), w.in_use)
    assert again.ops == ()


def agent_for(w: World, kube: FakeKube) -> MigAgent:
    return MigAgent("n1", w.nvml, kube, w.pods, AgentConfig(restart_device_plugin=False))


def real_status(w: World) -> dict[int, tuple[Instance, ...]]:
    busy = w.nvml.busy[0]
    used_devices = {d for ids in w.pods.devices.values() for d in ids}
    return {
        0: tuple(
            sorted(
                Instance(g.start, g.profile, g.gi_id in busy or bool(set(g.device_uuids) & used_devices))
                for g in w.nvml.gpu_instances(0)
                if g.compute_instances
            )
        )
    }


@PROPS
@given(worlds(), any_instances, st.booleans(), st.integers(0, 30))
def test_agent_status_equals_real_state_and_survives_crashes(
    w: World, spec: list[Instance], by_counts: bool, crash_at: int
) -> None:
    annotations = encode_spec({0: [i for i in spec if i.profile in w.model.profiles]}, "plan-7")
    if by_counts:
        annotations = {k: v for k, v in annotations.items() if "placement" not in k}
    kube = FakeKube([node(annotations=annotations)])
    before = instances_of(w)
    w.nvml.crash_at = w.nvml.mutations + crash_at

    async def scenario() -> None:
        with contextlib.suppress(Crash):  # the process died mid-apply; a new one starts on the same state
            await agent_for(w, kube).reconcile_once()
        w.nvml.crash_at = None
        agent = agent_for(w, kube)
        await agent.reconcile_once()
        second = await agent.reconcile_once()
        assert second.ops == []
        assert second.patch == {}

    asyncio.run(scenario())
    after = instances_of(w)
    assert all(after[i] == before[i] for i in w.in_use)
    assert all(g.compute_instances for g in w.nvml.gpu_instances(0)), "half-created instance left"
    status = decode_status(kube.nodes["n1"]["metadata"]["annotations"])
    assert status.plan_id == "plan-7"
    assert not status.problems
    reported = {i: g.placements for i, g in status.gpus.items()}
    assert reported == real_status(w)
