"""The simulated-node file: the documented example loads, errors are one line with a location, and
``save`` + ``load`` carry a run's result to the next run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nos.gpu.port import NvmlNoPermission
from nos.gpu.simulated import Caller, SimulatedNvml
from nos.gpu.simulated_file import SimulatedNodeError
from nos.mig.layout import Instance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulated-node.yaml"


def load_text(tmp_path: Path, text: str) -> SimulatedNvml:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return SimulatedNvml.load(path)


def test_example_file_loads_as_documented() -> None:
    sim = SimulatedNvml.load(EXAMPLE)
    gpus = sim.gpus()
    assert [g.name for g in gpus] == ["NVIDIA A100-SXM4-80GB"] * 2
    assert all(g.mig_enabled for g in gpus)
    assert sim.layout(0) == (Instance(0, "1g.10gb", used=True), Instance(2, "2g.20gb"), Instance(4, "3g.40gb"))
    half = next(g for g in sim.gpu_instances(0) if g.start == 4)
    assert half.compute_instances == () and half.device_uuids == ()
    assert sim.gpu_instances(1) == []


def test_count_mig_modes_and_explicit_fields(tmp_path: Path) -> None:
    sim = load_text(
        tmp_path,
        """
driver_version: "580.1"
gpus:
  - {model: NVIDIA-H100-80GB-HBM3, count: 2, instances: ["7g.80gb@0"]}
  - {model: H100-80GB, mig: false, mig_pending: true, uuid: GPU-x}
  - model: H100-80GB
    next_gi_id: 40
    instances:
      - {profile: 1g.10gb, start: 3, gi_id: 10, device_uuid: MIG-abc, pids: [77, 78]}
""",
    )
    gpus = sim.gpus()
    assert sim.driver_version == "580.1"
    assert [(g.mig_enabled, g.mig_pending) for g in gpus] == [(True, True), (True, True), (False, True), (True, True)]
    assert gpus[2].uuid == "GPU-x" and gpus[0].uuid != gpus[1].uuid
    assert [g.profile for g in sim.gpu_instances(1)] == ["7g.80gb"]
    [gi] = sim.gpu_instances(3)
    assert (gi.gi_id, gi.device_uuids) == (10, ("MIG-abc",))
    assert [p.pid for p in sim.processes(3)] == [77, 78]
    assert sim.create_gpu_instance(3, "1g.10gb", 0).gi_id == 7  # next_gi_id of older files is ignored


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus: []", "at least 1 item"),
        ("gpus: [{model: Tesla T4}]", "gpus.0: unknown MIG GPU model 'Tesla T4'"),
        ("gpus: [{model: A100-80GB, instances: [3g.40gb@0, 2g.20gb@2]}]", "gpus.0.instances.1 (2g.20gb@2)"),
        ("gpus: [{model: A100-80GB, instances: [2g.20gb@1]}]", "cannot be placed at slot 1"),
        ("gpus: [{model: A100-80GB, instances: [3g.40gb]}]", "expected PROFILE@START"),
        ("gpus: [{model: A100-80GB, mig: false, instances: [7g.80gb@0]}]", "MIG disabled"),
        ("gpus: [{model: A100-80GB, colour: red}]", "Extra inputs are not permitted at gpus.0.colour"),
        (
            "gpus: [{model: A100-80GB, instances: [{profile: 7g.80gb, start: 0,"
            " compute_instance: false, busy: true}]}]",
            "busy instance needs its compute instance",
        ),
        ("gpus: [{model: A100-80GB, count: 2, uuid: GPU-1}]", "uuid can only be given for count: 1"),
        (
            "gpus: [{model: A100-80GB, instances: [{profile: 1g.10gb, start: 0, gi_id: 9}]}]",
            "gi_id 9 given, but the driver numbers this GPU instance 7",
        ),
        (
            "gpus: [{model: A100-80GB, instances: [{profile: 3g.40gb, start: 0,"
            " compute_instances: [{slices: 2}, {slices: 2}]}]}]",
            "has 1 free compute slices, not 2",
        ),
        ("gpus: [{model: A100-80GB\n", "not YAML at line"),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SimulatedNodeError) as info:
        load_text(tmp_path, text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # the CLI reports ValueErrors as "cannot load simulated node"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SimulatedNodeError, match="cannot read"):
        SimulatedNvml.load(tmp_path / "absent.yaml")


def test_second_run_sees_the_first_runs_result(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("gpus: [{model: A100-80GB, instances: ['7g.80gb@0']}]\n")
    first = SimulatedNvml.load(path)
    old = first.gpu_instances(0)[0]
    first.destroy_gpu_instance(0, old.gi_id)
    new = first.create_compute_instance(0, first.create_gpu_instance(0, "3g.40gb", 4).gi_id)
    first.create_gpu_instance(0, "2g.20gb", 0)  # half-created when the "process" ends
    first.save(path)
    assert yaml.safe_load(path.read_text())["gpus"][0]["instances"][0]["compute_instance"] is False
    second = SimulatedNvml.load(path)
    assert second.gpu_instances(0) == first.gpu_instances(0)
    assert next(g for g in second.gpu_instances(0) if g.start == 4).device_uuids == new.device_uuids
    fresh = second.create_gpu_instance(0, "2g.20gb", 2)
    assert fresh.gi_id not in {old.gi_id, new.gi_id}
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_the_caller_is_part_of_the_state(tmp_path: Path) -> None:
    sim = load_text(
        tmp_path,
        """
caller: {monitor: false, pid_namespace: agent}
gpus: [{model: A100-80GB, instances: ["7g.80gb@0*"]}]
""",
    )
    assert sim.caller == Caller(config=True, monitor=False, pid_namespace="agent")
    with pytest.raises(NvmlNoPermission):
        sim.busy_gpu_instances(0)
    assert SimulatedNvml.from_dict(sim.to_dict()).caller == sim.caller
    assert "caller" not in SimulatedNvml.new("A30").to_dict()  # the default is not written
