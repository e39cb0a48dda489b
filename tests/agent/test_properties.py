"""Properties of reconcile + apply + report over random GPUs, in-use sets and specs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nos.agent.agent import MigAgent
from nos.agent.apply import Applier
from nos.agent.reconcile import Desired, plan_gpu
from nos.config import AgentConfig
from nos.contract.annotations import decode_status, encode_spec
from nos.gpu.simulated import SimulatedCrash, SimulatedNvml
from nos.kube.fake.memory import MemoryKube
from nos.mig.catalog import GpuModel, default_catalog
from nos.mig.layout import Instance, layout_errors
from tests.agent.helpers import annotations_of, node, provision

MODELS = [default_catalog().model(m) for m in ("A100-80GB", "A30-24GB")]


class StaticPodResources:
    """kubelet's answer: fixed allocations. ``on_call(n)`` runs before the n-th answer (1-based)."""

    def __init__(self) -> None:
        self.devices: dict[str, set[str]] = {}
        self.calls = 0
        self.on_call: Callable[[int], None] | None = None

    def allocated(self) -> dict[str, set[str]]:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
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
    nvml: SimulatedNvml
    in_use: set[int]
    used_layout: tuple[Instance, ...]
    pods: StaticPodResources


@st.composite
def worlds(draw: st.DrawFn) -> World:
    model = draw(st.sampled_from(MODELS))
    nvml = SimulatedNvml.new(model.name)
    pods = StaticPodResources()
    in_use: set[int] = set()
    used: list[Instance] = []
    for inst in draw(random_layout(model)):
        half = draw(st.integers(0, 5)) == 0
        gi = provision(nvml, 0, inst.profile, inst.start, complete=not half)
        if not half and draw(st.booleans()):
            in_use.add(gi.gi_id)
            used.append(Instance(inst.start, inst.profile, True))
            if draw(st.booleans()):  # allocated to a pod, or only running processes
                pods.devices.setdefault("nvidia.com/mig-" + inst.profile.split("+")[0], set()).update(gi.device_uuids)
            else:
                nvml.set_busy(0, gi.gi_id)
    return World(model, nvml, in_use, tuple(sorted(used)), pods)


def instances_of(w: World) -> dict[int, tuple[str, int]]:
    return {g.gi_id: (g.profile, g.start) for g in w.nvml.gpu_instances(0)}


def layout_of(w: World) -> tuple[Instance, ...]:
    """Every instance, half-created ones included, without the in-use marks."""
    return tuple(i.freed() for i in w.nvml.layout(0))


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
    assert layout_of(w) == target
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
    assert Counter(i.profile for i in layout_of(w)) == counts
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
    assert layout_of(w) == tuple(i.freed() for i in p.target)
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


def agent_for(w: World, kube: MemoryKube) -> MigAgent:
    return MigAgent("n1", w.nvml, kube, w.pods, AgentConfig(restart_device_plugin=False))


def real_status(w: World) -> dict[int, tuple[Instance, ...]]:
    busy = w.nvml.busy_gpu_instances(0)
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


CRASH_BEFORE = ("create_gpu_instance", "create_compute_instance", "destroy_gpu_instance", "busy_gpu_instances")
crash_points = st.one_of(
    st.tuples(st.just("after_gpu_instance"), st.integers(1, 3)),  # the n-th create: GI made, no CI
    st.tuples(st.sampled_from(CRASH_BEFORE), st.just(1)),  # the next call of that NVML method
    st.tuples(st.just("before_destroy"), st.integers(2, 4)),  # the n-th destroy of the process
)


def arm(w: World, point: tuple[str, int]) -> None:
    """Make the next process die at ``point`` (through SimulatedNvml's own crash hooks)."""
    kind, n = point
    if kind == "after_gpu_instance":
        w.nvml.crash_after_gpu_instance(n)
    elif kind == "before_destroy":
        # kubelet is asked once when observing, then right before every destroy: arm at the n-th destroy
        def on_call(calls: int) -> None:
            if calls == 1 + n:
                w.nvml.fail_next("destroy_gpu_instance", SimulatedCrash(f"killed before destroy #{n}"))

        w.pods.on_call = on_call
    else:
        w.nvml.fail_next(kind, SimulatedCrash(f"killed in {kind}"))


def restart(w: World) -> None:
    """A new process on the same GPUs: what the dead one left, no crash armed any more."""
    w.nvml = SimulatedNvml.from_dict(w.nvml.to_dict())
    w.pods.on_call, w.pods.calls = None, 0


CRASHES = Counter[str]()
"""Crashes that really happened, by point kind (a probe: ``pytest -s`` prints them at the end)."""


@PROPS
@given(worlds(), any_instances, st.booleans(), st.lists(crash_points, min_size=1, max_size=3))
def test_agent_status_equals_real_state_and_survives_crashes(
    w: World, spec: list[Instance], by_counts: bool, crashes: list[tuple[str, int]]
) -> None:
    annotations = encode_spec({0: [i for i in spec if i.profile in w.model.profiles]}, "plan-7")
    if by_counts:
        annotations = {k: v for k, v in annotations.items() if "placement" not in k}
    kube = MemoryKube()
    kube.add_node(node(annotations=annotations))
    before = instances_of(w)
    died = 0

    async def scenario() -> None:
        nonlocal died
        for point in crashes:  # each process dies at its point (if it gets there); the next one starts over
            arm(w, point)
            agent = agent_for(w, kube)
            try:
                await agent.reconcile_once()
            except SimulatedCrash:
                died += 1
                CRASHES[point[0]] += 1
            finally:
                agent.close()
            restart(w)
        agent = agent_for(w, kube)
        try:
            await agent.reconcile_once()
            second = await agent.reconcile_once()
        finally:
            agent.close()
        assert second.ops == []
        assert second.patch == {}

    asyncio.run(scenario())
    event(f"processes killed: {died}")
    after = instances_of(w)
    assert all(after[i] == before[i] for i in w.in_use)
    assert all(g.compute_instances for g in w.nvml.gpu_instances(0)), "half-created instance left"
    status = decode_status(annotations_of(kube))
    assert status.plan_id == "plan-7"
    assert not status.problems
    reported = {i: g.placements for i, g in status.gpus.items()}
    assert reported == real_status(w)
