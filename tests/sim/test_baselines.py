"""The reference policies: ``ideal`` (GPUs as pools of slices), ``whole-gpu``, ``best-static`` and
``hindsight-static``."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance, layout_errors
from nos.sim.nodes import NvmlFactory
from nos.sim.runner import simulate_policy
from nos.sim.scenario import DRAIN_S, NodeGroup, PodSpec, default_scenario
from nos.sim.static_mix import best_static, demand, known_demand, known_mix, maximal_layouts
from tests.sim.helpers import pod, tiny
from tests.sim.test_runs import _small_mixed

A100 = default_catalog().model("A100-80GB")


def test_ideal_packs_slices_without_placement_rules(nvml_factory: NvmlFactory) -> None:
    # 3g.40gb + four 1g.10gb: 7 compute slices and 8 memory slots, one GPU; all run at once
    pods = [pod("big", "3g.40gb", at=0, duration=600)] + [pod(f"s{i}", "1g.10gb", at=0) for i in range(4)]
    scenario = tiny(pods, layout={"1g.10gb": 7})
    ideal = simulate_policy(scenario, scenario.all_pods(), "ideal", nvml_factory)
    assert ideal.mean_pending_s == 0 and ideal.completed == 5 and ideal.device_plugin_restarts == 0
    assert ideal.allocation == pytest.approx(1.0) or ideal.allocation == 0.0  # arrivals all at 0: whole run
    # one more 1g.10gb pod does not fit (8 memory slots taken): it waits for the first to finish
    later = tiny([*pods, pod("late", "1g.10gb", at=10, duration=60)], layout={"1g.10gb": 7})
    waited = simulate_policy(later, later.all_pods(), "ideal", nvml_factory)
    assert waited.max_pending_s == pytest.approx(600 - 10)
    # whole-gpu: one pod at a time, 5 x 600 s
    whole = simulate_policy(scenario, scenario.all_pods(), "whole-gpu", nvml_factory)
    assert whole.completed == 5 and whole.max_pending_s == pytest.approx(4 * 600)
    assert whole.mean_device_wait_s == pytest.approx(whole.mean_pending_s)


def test_ideal_bounds_the_mig_policies(nvml_factory: NvmlFactory) -> None:
    scenario = _small_mixed()
    pods = scenario.all_pods()
    ideal = simulate_policy(scenario, pods, "ideal", nvml_factory)
    for policy in ("nos", "greedy", "best-static", "whole-gpu"):
        other = simulate_policy(scenario, pods, policy, nvml_factory)
        assert other.mean_pending_s >= ideal.mean_pending_s, policy
        assert other.never_scheduled >= ideal.never_scheduled, policy


def test_device_wait_counts_only_waiting_for_a_new_device(nvml_factory: NvmlFactory) -> None:
    scenario = tiny([pod("big", "3g.40gb", at=5, duration=900), pod("small", "1g.10gb", at=5)], layout={"1g.10gb": 7})
    nos = simulate_policy(scenario, scenario.all_pods(), "nos", nvml_factory)
    # small found an existing 1g.10gb (no wait); big waited for its 3g.40gb to be created and advertised
    assert nos.max_pending_s > 30 and 0 < nos.mean_device_wait_s <= nos.mean_pending_s
    static = simulate_policy(
        scenario.model_copy(update={"duration_s": 3600}), scenario.all_pods(), "static", nvml_factory
    )
    assert static.mean_device_wait_s == 0 and static.never_scheduled == 1


def test_maximal_layouts_are_valid_and_maximal() -> None:
    layouts = maximal_layouts(A100)
    assert (("7g.80gb", 1),) in layouts and (("1g.10gb", 7),) in layouts and (("3g.40gb", 2),) in layouts
    assert not any("+me" in p for layout in layouts for p, _ in layout)
    for layout in layouts:
        names = [p for p, n in layout for _ in range(n)]
        assert sum(A100.profile(p).compute for p in names) <= A100.compute_slices
    # (3g.40gb, 2g.20gb) is not maximal: a 1g.10gb still fits beside them
    assert (("2g.20gb", 1), ("3g.40gb", 1)) not in layouts
    assert not layout_errors(A100, (Instance(4, "3g.40gb"), Instance(0, "2g.20gb"), Instance(2, "1g.10gb")))


def _specs(profile: str, n: int, duration: float = 3600) -> list[PodSpec]:
    return [PodSpec(name=f"{profile}-{i}", arrival_s=i, profile=profile, duration_s=duration) for i in range(n)]


def test_best_static_follows_the_profile_mix() -> None:
    groups = [NodeGroup(name="a", model="A100-80GB", count=2, gpus=4)]
    models = {"a": A100}
    whole = best_static(groups, models, demand(_specs("7g.80gb", 20), 7200))
    assert whole["a"] == [{"7g.80gb": 1}] * 8
    small = best_static(groups, models, demand(_specs("1g.10gb", 100), 7200))
    assert all(layout == {"1g.10gb": 7} for layout in small["a"])
    # as much 1g.10gb demand as 3g.40gb demand (in devices): both served in proportion
    mixed = best_static(groups, models, demand(_specs("1g.10gb", 20) + _specs("3g.40gb", 20), 7200))
    one = sum(layout.get("1g.10gb", 0) for layout in mixed["a"])
    three = sum(layout.get("3g.40gb", 0) for layout in mixed["a"])
    assert one >= 8 and three >= 8 and one + 3 * three <= 56
    # dealt across nodes: each node gets each layout as often as the other, give or take one
    first, second = Counter(map(str, mixed["a"][:4])), Counter(map(str, mixed["a"][4:]))
    assert all(abs(first[k] - second[k]) <= 1 for k in first | second)


def test_best_static_runs_its_layouts(nvml_factory: NvmlFactory) -> None:
    pods = [pod(f"w{i}", "7g.80gb", at=i, duration=300) for i in range(2)]
    scenario = tiny(pods, gpus=2, layout={"1g.10gb": 7})
    result = simulate_policy(scenario, scenario.all_pods(), "best-static", nvml_factory)
    assert result.layouts == {"7g.80gb=1": 2} and result.mean_pending_s == 0 and result.device_plugin_restarts == 0


def test_best_static_knows_the_generators_mix_not_the_draw() -> None:
    scenario = default_scenario()
    horizon = 3 * 3600 + DRAIN_S
    mix = known_mix(scenario, horizon)
    main, priority = scenario.workload.generators
    mean_main = (main.duration_max_s - main.duration_min_s) / math.log(main.duration_max_s / main.duration_min_s)
    mean_prio = (priority.duration_max_s - priority.duration_min_s) / math.log(
        priority.duration_max_s / priority.duration_min_s
    )
    # weights 4 (1g.10gb) and 1 (7g.80gb) of 12 in the main generator; 1g.10gb also half of the other's
    assert mix["7g.80gb"] == pytest.approx(400 / 12 * mean_main / horizon)
    assert mix["1g.10gb"] == pytest.approx(400 * 4 / 12 * mean_main / horizon + 20 / 2 * mean_prio / horizon)
    # the same known mix whatever the seed draws; the level is the run's own demand
    for seed in (1, 2):
        pods = scenario.model_copy(update={"seed": seed}).all_pods()
        want, own = known_demand(scenario, pods, horizon), demand(pods, horizon)
        assert sum(want.values()) == pytest.approx(sum(own.values()))
        assert want["1g.10gb"] / want["7g.80gb"] == pytest.approx(mix["1g.10gb"] / mix["7g.80gb"])
        assert want != own


def test_best_static_is_configured_for_the_expected_mix(nvml_factory: NvmlFactory) -> None:
    # the operator expected whole-GPU jobs; 1g.10gb pods came: best-static has no device for them,
    # hindsight-static (chosen for these very pods) has
    pods = [pod(f"s{i}", "1g.10gb", at=i, duration=300) for i in range(3)]
    scenario = tiny(pods, gpus=2, layout={"1g.10gb": 7}).model_copy(
        update={"expected_mix": {"7g.80gb": 1.0}, "duration_s": 3600}
    )
    expected = simulate_policy(scenario, scenario.all_pods(), "best-static", nvml_factory)
    assert expected.layouts == {"7g.80gb=1": 2} and expected.never_scheduled == 3
    hindsight = simulate_policy(scenario, scenario.all_pods(), "hindsight-static", nvml_factory)
    assert hindsight.layouts == {"1g.10gb=7": 2} and hindsight.mean_pending_s == 0
    # without an expected mix, explicit pods are what the operator knows: both agree
    known = scenario.model_copy(update={"expected_mix": None})
    assert simulate_policy(known, known.all_pods(), "best-static", nvml_factory).layouts == hindsight.layouts
