"""SimulatedNvml enforces NVML's MIG rules, and a rejected call changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nos.gpu.port import (
    NvmlError,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNoPermission,
    NvmlNotFound,
    NvmlNotSupported,
)
from nos.gpu.simulated import NVML_NAMES, SimProcess, SimulatedCrash, SimulatedNvml, resolve_model
from nos.gpu.simulated_file import SimulatedNodeError
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance, layout_errors


def a100(gpus: int = 1) -> SimulatedNvml:
    return SimulatedNvml.new("A100-80GB", gpus)


def complete(sim: SimulatedNvml, gpu: int, profile: str, start: int) -> int:
    gi = sim.create_gpu_instance(gpu, profile, start)
    return sim.create_compute_instance(gpu, gi.gi_id).gi_id


# ---------------------------------------------------------------------- profile table


def test_profile_table_has_driver_ids_not_indices() -> None:
    table = {p.name: p for p in a100().profiles(0)}
    ids = {name: p.profile_id for name, p in table.items()}
    assert ids == {
        "1g.10gb": 19,
        "1g.10gb+me": 20,
        "1g.20gb": 15,
        "2g.20gb": 14,
        "3g.40gb": 9,
        "4g.40gb": 5,
        "7g.80gb": 0,
    }
    assert table["1g.20gb"].nvml_profile == 9 and table["1g.20gb"].slices == 1
    assert table["1g.20gb"].placements == ((0, 2), (2, 2), (4, 2), (6, 2))
    assert table["3g.40gb"].placements == ((0, 4), (4, 4)) and table["3g.40gb"].max_count == 2


@pytest.mark.parametrize("model", [m.name for m in default_catalog().models])
def test_default_product_name_maps_back_to_its_model(model: str) -> None:
    """The agent finds the model from GpuInfo.name; each simulated model must be found again."""
    sim = SimulatedNvml.new(model)
    name = sim.gpus()[0].name
    assert name == NVML_NAMES[model]
    assert default_catalog().model_for_product(name.replace(" ", "-")) is default_catalog().model(model)


def test_model_resolution_and_unknown_model() -> None:
    assert resolve_model("NVIDIA H100 80GB HBM3").name == "H100-80GB"
    assert resolve_model("NVIDIA-A30").name == "A30-24GB"
    assert resolve_model("H200-141GB").name == "H200-141GB"
    with pytest.raises(SimulatedNodeError, match="unknown MIG GPU model 'Tesla T4'"):
        resolve_model("Tesla T4")


# ---------------------------------------------------------------------- creation rules


def test_overlap_is_insufficient_resources_and_changes_nothing() -> None:
    sim = a100()
    complete(sim, 0, "3g.40gb", 0)
    before = sim.to_dict()
    with pytest.raises(NvmlInsufficientResources, match="overlaps"):
        sim.create_gpu_instance(0, "2g.20gb", 2)
    assert sim.to_dict() == before


@pytest.mark.parametrize(
    ("profile", "start"),
    [("2g.20gb", 1), ("3g.40gb", 2), ("4g.40gb", 4), ("1g.10gb", 7), ("7g.80gb", 1), ("1g.20gb", 1)],
)
def test_disallowed_start_is_invalid_argument(profile: str, start: int) -> None:
    sim = a100()
    with pytest.raises(NvmlInvalidArgument, match="cannot be placed at slot"):
        sim.create_gpu_instance(0, profile, start)
    assert sim.gpu_instances(0) == []


def test_slot_7_only_for_instances_of_two_slots_or_more() -> None:
    sim = a100()
    with pytest.raises(NvmlInvalidArgument):
        sim.create_gpu_instance(0, "1g.10gb", 7)
    gi = sim.create_gpu_instance(0, "1g.20gb", 6)
    assert (gi.start, gi.size) == (6, 2)


def test_4g_needs_slot_0_free() -> None:
    sim = a100()
    complete(sim, 0, "1g.10gb", 1)
    with pytest.raises(NvmlInsufficientResources):
        sim.create_gpu_instance(0, "4g.40gb", 0)
    gi = sim.create_gpu_instance(0, "3g.40gb", 4)  # the other half stays usable
    assert gi.start == 4


def test_unknown_profile_is_invalid_argument() -> None:
    with pytest.raises(NvmlInvalidArgument, match=r"no GPU instance profile '1g\.5gb'"):
        a100().create_gpu_instance(0, "1g.5gb", 0)


def test_max_count_and_media_engines() -> None:
    sim = a100()
    sim.create_gpu_instance(0, "1g.10gb+me", 0)
    with pytest.raises(NvmlInsufficientResources, match=r"maximum of 1|media"):
        sim.create_gpu_instance(0, "1g.10gb+me", 1)
    a30 = SimulatedNvml.new("A30-24GB")
    a30.create_gpu_instance(0, "1g.6gb+me", 0)
    with pytest.raises(NvmlInsufficientResources, match="media engines"):
        a30.create_gpu_instance(0, "2g.12gb+me", 2)  # its own max (1) is fine: the media limit is not
    assert [g.profile for g in a30.gpu_instances(0)] == ["1g.6gb+me"]


def test_seven_1g_fill_the_compute_slices() -> None:
    sim = a100()
    for s in range(7):
        complete(sim, 0, "1g.10gb", s)
    with pytest.raises(NvmlInsufficientResources):
        sim.create_gpu_instance(0, "1g.20gb", 6)
    assert len(sim.gpu_instances(0)) == 7


def test_bad_gpu_index() -> None:
    with pytest.raises(NvmlInvalidArgument, match="no GPU 3"):
        a100(2).profiles(3)


# ---------------------------------------------------------------------- MIG mode


def test_mig_disabled_gpu_answers_only_gpus() -> None:
    sim = SimulatedNvml.new("A100-80GB", 1, mig_enabled=False)
    sim.add_gpu("A100-80GB", mig_enabled=False, mig_pending=True)
    info = sim.gpus()
    assert [(g.mig_enabled, g.mig_pending) for g in info] == [(False, False), (False, True)]
    calls = [
        lambda: sim.profiles(0),
        lambda: sim.gpu_instances(0),
        lambda: sim.create_gpu_instance(0, "7g.80gb", 0),
        lambda: sim.create_compute_instance(0, 7),
        lambda: sim.destroy_gpu_instance(0, 7),
        lambda: sim.busy_gpu_instances(0),
    ]
    for call in calls:
        with pytest.raises(NvmlNotSupported, match="MIG mode"):
            call()
    with pytest.raises(NvmlNotSupported, match="after the next GPU reset"):
        sim.profiles(1)


# ---------------------------------------------------------------------- ids, CIs, UUIDs


@pytest.mark.parametrize(
    ("model", "placements", "ids"),
    [
        # NVIDIA's MIG user guide, A100-40GB: 1g at 0..6 -> 7..13, 2g at 0/4 -> 3/5, 4g at 0 -> 1
        ("A100-80GB", [("1g.10gb", s) for s in range(7)], list(range(7, 14))),
        ("A100-80GB", [("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4)], [3, 4, 5]),
        ("A100-80GB", [("4g.40gb", 0), ("1g.20gb", 4), ("1g.20gb", 6)], [1, 5, 6]),
        ("A100-80GB", [("3g.40gb", 0), ("3g.40gb", 4)], [1, 2]),
        ("A100-80GB", [("7g.80gb", 0)], [0]),
        ("A30-24GB", [("2g.12gb", 0), ("1g.6gb", 2), ("1g.6gb", 3)], [1, 5, 6]),
        ("RTX-PRO-6000-96GB", [("1g.24gb", s) for s in range(4)], [3, 4, 5, 6]),
    ],
)
def test_gi_ids_are_the_drivers_partition_ids(model: str, placements: list[tuple[str, int]], ids: list[int]) -> None:
    sim = SimulatedNvml.new(model)
    assert [sim.create_gpu_instance(0, p, s).gi_id for p, s in placements] == ids


def test_a_recreated_instance_gets_the_same_id_again() -> None:
    """Why the destroy re-check cannot trust (gi_id, placement) alone: the driver reuses the id."""
    sim = a100()
    first = complete(sim, 0, "3g.40gb", 4)
    [before] = sim.gpu_instances(0)
    sim.destroy_gpu_instance(0, first)
    again = complete(sim, 0, "3g.40gb", 4)
    [after] = sim.gpu_instances(0)
    assert again == first and (after.start, after.size) == (before.start, before.size)
    assert after.device_uuids != before.device_uuids  # only the MIG device UUID tells them apart


def test_half_created_instance_is_visible_without_ci_or_uuid() -> None:
    sim = a100()
    gi = sim.create_gpu_instance(0, "3g.40gb", 4)
    [seen] = sim.gpu_instances(0)
    assert seen == gi and seen.compute_instances == () and seen.device_uuids == ()
    done = sim.create_compute_instance(0, gi.gi_id)
    assert done.compute_instances == (0,)
    [uuid] = done.device_uuids
    assert uuid.startswith("MIG-") and len(uuid) == len("MIG-") + 36
    with pytest.raises(NvmlInsufficientResources, match="already has"):
        sim.create_compute_instance(0, gi.gi_id)
    with pytest.raises(NvmlNotFound):
        sim.create_compute_instance(0, gi.gi_id + 100)


def test_recreated_instance_gets_a_fresh_uuid() -> None:
    sim = a100()
    first = sim.create_compute_instance(0, sim.create_gpu_instance(0, "7g.80gb", 0).gi_id).device_uuids
    sim.destroy_gpu_instance(0, sim.gpu_instances(0)[0].gi_id)
    second = sim.create_compute_instance(0, sim.create_gpu_instance(0, "7g.80gb", 0).gi_id).device_uuids
    assert first != second


def test_gpu_uuids_differ_per_gpu_and_per_node() -> None:
    one, other = SimulatedNvml.new("A30", 2, node="n1"), SimulatedNvml.new("A30", 1, node="n2")
    uuids = [g.uuid for g in one.gpus()] + [g.uuid for g in other.gpus()]
    assert len(set(uuids)) == 3 and all(u.startswith("GPU-") for u in uuids)


# ---------------------------------------------------------------------- processes and destroy


def test_destroying_a_busy_instance_is_in_use() -> None:
    sim = a100()
    gi_id = complete(sim, 0, "2g.20gb", 0)
    sim.set_busy(0, gi_id)
    assert sim.busy_gpu_instances(0) == {gi_id}
    with pytest.raises(NvmlInUse, match="running processes"):
        sim.destroy_gpu_instance(0, gi_id)
    with pytest.raises(NvmlInUse):
        sim.destroy_compute_instance(0, gi_id)
    assert [g.gi_id for g in sim.gpu_instances(0)] == [gi_id]
    sim.set_busy(0, gi_id, busy=False)
    sim.destroy_gpu_instance(0, gi_id)
    assert sim.gpu_instances(0) == [] and sim.busy_gpu_instances(0) == set()
    with pytest.raises(NvmlNotFound):
        sim.destroy_gpu_instance(0, gi_id)


def test_process_table_needs_a_compute_instance() -> None:
    sim = a100()
    half = sim.create_gpu_instance(0, "3g.40gb", 0).gi_id
    with pytest.raises(ValueError, match="no compute instance"):
        sim.set_processes(0, [SimProcess(100, half)])
    done = complete(sim, 0, "3g.40gb", 4)
    sim.set_processes(0, [SimProcess(100, done), SimProcess(101, done)])
    assert sim.busy_gpu_instances(0) == {done} and [p.pid for p in sim.processes(0)] == [100, 101]
    assert sim.layout(0) == (Instance(0, "3g.40gb"), Instance(4, "3g.40gb", used=True))


def test_destroy_compute_instance_leaves_a_half_created_instance() -> None:
    sim = a100()
    gi_id = complete(sim, 0, "4g.40gb", 0)
    sim.destroy_compute_instance(0, gi_id)
    [gi] = sim.gpu_instances(0)
    assert gi.compute_instances == () and gi.device_uuids == ()
    with pytest.raises(NvmlNotFound, match="no compute instance"):
        sim.destroy_compute_instance(0, gi_id)


# ---------------------------------------------------------------------- injected failures and crashes


def test_fail_next_raises_n_times_then_works() -> None:
    sim = a100()
    sim.fail_next("create_gpu_instance", NvmlNoPermission("injected"), times=2)
    for _ in range(2):
        with pytest.raises(NvmlNoPermission, match="injected"):
            sim.create_gpu_instance(0, "7g.80gb", 0)
    assert sim.gpu_instances(0) == []
    assert sim.create_gpu_instance(0, "7g.80gb", 0).profile == "7g.80gb"
    with pytest.raises(ValueError, match="unknown method"):
        sim.fail_next("create", NvmlError("x"))


def test_crash_after_gpu_instance_leaves_it_half_created() -> None:
    sim = a100()
    sim.crash_after_gpu_instance(nth=2)
    complete(sim, 0, "3g.40gb", 0)  # the first create is not the crashing one
    with pytest.raises(SimulatedCrash, match=r"3g.40gb@4"):
        sim.create_gpu_instance(0, "3g.40gb", 4)
    assert not issubclass(SimulatedCrash, Exception)  # no ``except Exception`` can swallow it
    restarted = SimulatedNvml.from_dict(sim.to_dict())
    by_start = {g.start: g for g in restarted.gpu_instances(0)}
    assert by_start[0].compute_instances == (0,)
    assert by_start[4].compute_instances == () and by_start[4].device_uuids == ()
    # one-shot: after the crash, creates work again
    sim.destroy_gpu_instance(0, by_start[4].gi_id)
    assert sim.create_gpu_instance(0, "3g.40gb", 4).compute_instances == ()
    with pytest.raises(ValueError, match="nth"):
        sim.crash_after_gpu_instance(nth=0)


# ---------------------------------------------------------------------- state


def test_state_round_trip_keeps_ids_uuids_processes_and_counters(tmp_path: Path) -> None:
    sim = a100(2)
    busy = complete(sim, 0, "3g.40gb", 0)
    sim.set_busy(0, busy)
    gone = complete(sim, 0, "2g.20gb", 4)
    sim.destroy_gpu_instance(0, gone)
    sim.create_gpu_instance(1, "7g.80gb", 0)
    copy = SimulatedNvml.from_dict(sim.to_dict())
    assert copy.to_dict() == sim.to_dict()
    assert copy.gpu_instances(0) == sim.gpu_instances(0) and copy.busy_gpu_instances(0) == {busy}
    assert copy.gpus() == sim.gpus()
    # the UUID counter came along: both hand out a UUID neither handed out before
    a, b = (complete(s, 0, "2g.20gb", 4) for s in (sim, copy))
    assert a == b == gone
    assert sim.gpu_instances(0) == copy.gpu_instances(0)
    path = tmp_path / "node.yaml"
    sim.save(path)
    assert SimulatedNvml.load(path).to_dict() == sim.to_dict()


# ---------------------------------------------------------------------- the property


MODELS = ["A100-80GB", "A30-24GB", "H200-141GB"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, int]]]:
    model = draw(st.sampled_from(MODELS))
    names = [*default_catalog().model(model).profiles, "9g.99gb"]
    op = st.one_of(
        # start: b < 9 is a raw slot (often not allowed), otherwise one of the profile's allowed starts
        st.tuples(st.just("create"), st.integers(0, len(names) - 1), st.integers(0, 30)),
        st.tuples(st.just("create"), st.integers(0, len(names) - 1), st.integers(9, 30)),
        st.tuples(st.sampled_from(["ci", "destroy", "busy", "idle", "destroy_ci"]), st.integers(0, 9), st.just(0)),
    )
    return model, draw(st.lists(op, max_size=60))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_any_call_sequence_keeps_a_valid_layout_and_rejections_change_nothing(
    scenario: tuple[str, list[tuple[str, int, int]]],
) -> None:
    model_name, ops = scenario
    model = default_catalog().model(model_name)
    names = [*model.profiles, "9g.99gb"]
    sim = SimulatedNvml.new(model_name)
    for kind, a, b in ops:
        ids = [g.gi_id for g in sim.gpu_instances(0)]
        gi_id = ids[a % len(ids)] if ids else 1
        before = sim.to_dict()
        try:
            if kind == "create":
                profile = model.profiles.get(names[a])
                start = b if b < 9 or profile is None else profile.starts[b % len(profile.starts)]
                sim.create_gpu_instance(0, names[a], start)
            elif kind == "ci":
                sim.create_compute_instance(0, gi_id)
            elif kind == "destroy":
                sim.destroy_gpu_instance(0, gi_id)
            elif kind == "destroy_ci":
                sim.destroy_compute_instance(0, gi_id)
            elif kind == "busy":
                sim.set_busy(0, gi_id)
            else:
                sim.set_busy(0, gi_id, busy=False)
        except (NvmlError, ValueError):
            assert sim.to_dict() == before, f"rejected {kind} changed the state"
        instances = [Instance(g.start, g.profile) for g in sim.gpu_instances(0)]
        assert layout_errors(model, instances) == []
        assert sim.busy_gpu_instances(0) <= {g.gi_id for g in sim.gpu_instances(0) if g.compute_instances}
