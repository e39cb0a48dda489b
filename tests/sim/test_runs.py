"""Whole runs: the production partitioner and agent on the simulated cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nos.gpu.port import GpuInstanceInfo, Nvml
from nos.mig.catalog import GpuModel, default_catalog
from nos.sim import nodes as sim_nodes
from nos.sim.invariants import InvariantViolation, check_bound_devices_exist, check_layouts
from nos.sim.nodes import NvmlFactory
from nos.sim.runner import simulate_policy
from nos.sim.scenario import Generator, NodeGroup, ProfileShare, Scenario, Workload
from tests.sim.helpers import pod, tiny


def test_nos_reconfigures_to_run_a_pod_static_cannot(nvml_factory: NvmlFactory) -> None:
    scenario = tiny([pod("big", "3g.40gb", at=5, duration=900)], layout={"1g.10gb": 7})
    nos = simulate_policy(scenario, scenario.all_pods(), "nos", nvml_factory)
    assert nos.completed == 1 and nos.never_scheduled == 0
    assert nos.device_plugin_restarts >= 1 and nos.node_reconfigurations >= 1 and nos.plans >= 1
    # batch idle window (10 s) + debounces + plugin restart (20 s); the agent wakes on its new spec
    assert 30 <= nos.mean_pending_s <= 10 + 60 + 20 + 5
    assert nos.samples[-1].running == 0 and any(s.running == 1 for s in nos.samples)
    static = simulate_policy(
        scenario.model_copy(update={"duration_s": 3600}), scenario.all_pods(), "static", nvml_factory
    )
    assert static.completed == 0 and static.never_scheduled == 1 and static.device_plugin_restarts == 0


class _DestroysNeighbours:
    """A broken NVML: destroying one GPU instance destroys every instance of that GPU."""

    def __init__(self, inner: Nvml) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        for gi in self._inner.gpu_instances(gpu):
            self._inner.destroy_gpu_instance(gpu, gi.gi_id)


def test_destroying_an_in_use_instance_fails_the_run(nvml_factory: NvmlFactory) -> None:
    def broken(model: GpuModel, gpus: int) -> Nvml:
        return _DestroysNeighbours(nvml_factory(model, gpus))  # type: ignore[return-value]

    scenario = tiny(
        [pod("small", "1g.10gb", at=0, duration=7200), pod("big", "3g.40gb", at=120, duration=600)],
        layout={"1g.10gb": 7},
    )
    assert simulate_policy(scenario, scenario.all_pods(), "nos", nvml_factory).completed == 2  # sane NVML: fine
    with pytest.raises(InvariantViolation, match="in use by running pod workload/small was destroyed"):
        simulate_policy(scenario, scenario.all_pods(), "nos", broken)


def test_bound_device_must_exist_and_layouts_must_be_physical(nvml_factory: NvmlFactory) -> None:
    model = default_catalog().model("A100-80GB")
    nvml = nvml_factory(model, 1)
    gi = nvml.create_gpu_instance(0, "3g.40gb", 0)
    gi = nvml.create_compute_instance(0, gi.gi_id)
    check_bound_devices_exist("n", {gi.device_uuids[0]: "default/p"}, nvml, 0)
    with pytest.raises(InvariantViolation, match="bound to MIG device MIG-gone, which does not exist"):
        check_bound_devices_exist("n", {"MIG-gone": "default/p"}, nvml, 0)
    check_layouts("n", model, nvml, 0)

    class Overlapping:
        def __getattr__(self, name: str) -> Any:
            return getattr(nvml, name)

        def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
            return [*nvml.gpu_instances(gpu), GpuInstanceInfo(gpu, 99, "2g.20gb", 2, 2, (0,), ("MIG-x",))]

    with pytest.raises(InvariantViolation, match="physically impossible layout"):
        check_layouts("n", model, Overlapping(), 0)  # type: ignore[arg-type]


def _small_mixed(seed: int = 3) -> Scenario:
    return Scenario(
        name="small",
        seed=seed,
        nodes=[NodeGroup(name="a", model="A100-80GB", count=2, gpus=2)],
        workload=Workload(
            generators=[
                Generator(
                    count=30,
                    end_s=1800,
                    burst=0.5,
                    duration_min_s=120,
                    duration_max_s=1200,
                    profiles=[
                        ProfileShare(profile="1g.10gb", weight=3),
                        ProfileShare(profile="2g.20gb", weight=2),
                        ProfileShare(profile="4g.40gb", weight=1),
                        ProfileShare(profile="7g.80gb", weight=1),
                    ],
                )
            ]
        ),
    )


@pytest.mark.parametrize("policy", ["greedy", "nos"])
def test_same_seed_same_result(nvml_factory: NvmlFactory, policy: str) -> None:
    scenario = _small_mixed()
    first = simulate_policy(scenario, scenario.all_pods(), policy, nvml_factory)
    second = simulate_policy(scenario, scenario.all_pods(), policy, nvml_factory)
    assert first.to_json() == second.to_json()
    assert first.completed == first.pods == 30 and first.device_plugin_restarts > 0
    other = _small_mixed(seed=4)
    assert simulate_policy(other, other.all_pods(), policy, nvml_factory).to_json() != first.to_json()


def test_cli_default_run(nvml_factory: NvmlFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nos.cli import simulate as cli

    monkeypatch.setattr(cli, "default_scenario", _small_mixed)
    monkeypatch.setattr(sim_nodes, "simulated_nvml", nvml_factory)
    plot = tmp_path / "sim.png"
    result = CliRunner().invoke(cli.simulate, ["--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc["policies"]) == ["best-static", "greedy", "ideal", "nos", "whole-gpu"]  # sorted keys
    for r in doc["policies"].values():
        assert r["pods"] == 30
        assert {
            "meanPendingSeconds",
            "p50PendingSeconds",
            "p95PendingSeconds",
            "maxPendingSeconds",
            "meanDeviceWaitSeconds",
            "allocationPercent",
            "devicePluginRestarts",
            "neverScheduled",
            "vsIdeal",
        } <= set(r)
    for name in ("best-static", "whole-gpu", "ideal"):
        assert doc["policies"][name]["devicePluginRestarts"] == 0
    assert doc["policies"]["ideal"]["vsIdeal"]["meanPendingRatio"] in (1.0, None)
    assert doc["parameters"]["devicePluginRestartSeconds"] == 30
    assert doc["parameters"]["batchWindowIdleSeconds"] == 10 and doc["parameters"]["schedulerRetrySeconds"] == 300
    assert plot.read_bytes().startswith(b"\x89PNG")
    table = CliRunner().invoke(cli.simulate, ["--policies", "nos"])
    assert table.exit_code == 0 and "│ nos" in table.stdout and "greedy" not in table.stdout


def test_profile_shares_reach_nos_and_are_shown(nvml_factory: NvmlFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from nos.cli import simulate as cli

    monkeypatch.setattr(cli, "default_scenario", _small_mixed)
    monkeypatch.setattr(sim_nodes, "simulated_nvml", nvml_factory)
    for shares in ("0", "0.5"):
        result = CliRunner().invoke(cli.simulate, ["--json", "--policies", "nos", "--shares", shares])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["scenario"]["profileShares"] == float(shares)
    table = CliRunner().invoke(cli.simulate, ["--policies", "nos", "--shares", "0"])
    assert "nos' profile shares: 0 (off)" in table.stdout
    assert CliRunner().invoke(cli.simulate, ["--shares", "1.5"]).exit_code == 2
    known = CliRunner().invoke(cli.simulate, ["--json", "--policies", "nos", "--shares", "1", "--mix", "known"])
    assert known.exit_code == 0, known.output
    scenario = json.loads(known.stdout)["scenario"]
    assert scenario["profileMix"] == scenario["bestStaticMix"] != {}  # what best-static is configured for
    given = CliRunner().invoke(cli.simulate, ["--json", "--policies", "nos", "--mix", "7g.80gb=3,1g.10gb=1"])
    assert json.loads(given.stdout)["scenario"]["profileMix"] == {"7g.80gb": 0.75, "1g.10gb": 0.25}
    table = CliRunner().invoke(cli.simulate, ["--policies", "nos", "--shares", "1", "--mix", "7g.80gb=1"])
    assert "following the mix 7g.80gb 100.0%" in table.stdout
    assert "has no effect with profile shares 0" in given.stderr  # --shares not given: the scenario's 0
    cleared = CliRunner().invoke(cli.simulate, ["--json", "--policies", "nos", "--mix", "none"])
    assert json.loads(cleared.stdout)["scenario"]["profileMix"] == {}
    for bad in ("7g.80gb", "9g.1gb=1"):
        assert CliRunner().invoke(cli.simulate, ["--mix", bad]).exit_code == 2


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    from nos.cli import simulate as cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "nodes: [{model: A100-80GB, gpus: 1}]\nworkload: {pods: [{arrival_s: 0, profile: 9g.1gb, duration_s: 1}]}\n"
    )
    result = CliRunner().invoke(cli.simulate, [str(bad)])
    assert result.exit_code == 2 and "offered by no GPU model" in result.output
    result = CliRunner().invoke(cli.simulate, ["--static-layout", "1g.10gb"])
    assert result.exit_code == 2 and "PROFILE=COUNT" in result.output
    for mix, message in (("{9g.1gb: 1}", "offered by no GPU model"), ("{1g.10gb: -1}", "greater than or equal to 0")):
        wrong = tmp_path / "mix.yaml"
        wrong.write_text(f"nodes: [{{model: A100-80GB, gpus: 1}}]\nexpected_mix: {mix}\n")
        result = CliRunner().invoke(cli.simulate, [str(wrong)])
        assert result.exit_code == 2 and message in result.output, result.output
    typo = tmp_path / "typo.yaml"
    typo.write_text("nodes: [{model: A100-80GB, gpus: 1, gpu: 2}]\n")
    result = CliRunner().invoke(cli.simulate, [str(typo)])
    assert result.exit_code == 2
    assert result.output.strip() == f"simulate: {typo}: nodes.0.gpu: Extra inputs are not permitted"
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    result = CliRunner().invoke(cli.simulate, [str(snapshot)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "not a scenario" in result.output
    result = CliRunner().invoke(cli.simulate, ["--policies", "nos,bogus"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "'ideal'" in result.output


def test_agent_wakes_when_its_node_gets_a_new_spec(nvml_factory: NvmlFactory) -> None:
    """As in the cluster (the agent watches its Node), a written plan is applied within moments,
    not at the agent's next period."""
    scenario = tiny([pod("big", "3g.40gb", at=5, duration=900)], layout={"1g.10gb": 7})
    scenario = scenario.model_copy(update={"timings": scenario.timings.model_copy(update={"agent_interval_s": 3600})})
    nos = simulate_policy(scenario, scenario.all_pods(), "nos", nvml_factory)
    assert nos.completed == 1 and nos.node_reconfigurations >= 1
    # batch idle window (10 s) + debounces (1 s each) + plugin restart (20 s) + the restarter's polls
    assert 31 <= nos.mean_pending_s <= 10 + 2 + 20 + 6, nos.mean_pending_s


def test_nos_keeps_a_free_device_of_a_profile_below_its_share(nvml_factory: NvmlFactory) -> None:
    """Three 4g.40gb pods run on a node of four 4g+3g GPUs when a whole-GPU pod arrives: 4g.40gb's
    share (12 of 19 demanded slices, of 28) comes to four devices, so the fourth GPU's free 4g.40gb is
    kept and the whole-GPU pod waits until one of the short 4g.40gb pods ends; without shares that
    GPU is rebuilt for it at once. With an expected mix holds rank below every pod: the device goes
    to the whole-GPU pod."""
    scenario = tiny(
        [
            pod("a4", "4g.40gb", at=0, duration=20000),
            pod("b4", "4g.40gb", at=0, duration=20000),
            pod("x4", "4g.40gb", at=0, duration=600),
            pod("w7", "7g.80gb", at=60, duration=3000),
        ],
        layout={"4g.40gb": 1, "3g.40gb": 1},
        gpus=4,
    )
    waits = {}
    for case, update in {
        "off": {"profile_shares": 0.0},
        "shares": {"profile_shares": 1.0},
        "mix": {"profile_shares": 1.0, "profile_mix": {"4g.40gb": 1.0}},
    }.items():
        run = simulate_policy(scenario.model_copy(update=update), scenario.all_pods(), "nos", nvml_factory)
        assert run.completed == 4 and run.never_scheduled == 0
        waits[case] = run.by_profile["7g.80gb"]["meanPendingSeconds"]
    assert waits["off"] < 120 < 540 <= waits["shares"] and waits["mix"] < 120


def test_an_expected_mix_shapes_idle_capacity(nvml_factory: NvmlFactory) -> None:
    """The operator expects whole-GPU jobs: when nos plans for a 3g.40gb pod it also rebuilds the idle
    GPU as a whole GPU, so the whole-GPU pod that comes later runs at once (without the mix it waits
    for a reconfiguration)."""
    idle = tiny(
        [pod("a3", "3g.40gb", at=0, duration=5000), pod("w7", "7g.80gb", at=600, duration=100)],
        layout={"1g.10gb": 7},
        gpus=2,
    )
    waits = {}
    for mix in ({}, {"7g.80gb": 1.0}):
        run = simulate_policy(
            idle.model_copy(update={"profile_shares": 1.0, "profile_mix": mix}), idle.all_pods(), "nos", nvml_factory
        )
        assert run.completed == 2
        waits[bool(mix)] = run.by_profile["7g.80gb"]["meanPendingSeconds"]
    assert waits[True] == 0 and waits[False] > 30


@pytest.mark.parametrize("model", [m.name for m in default_catalog().models])
def test_every_model_has_a_default_static_layout(model: str, nvml_factory: NvmlFactory) -> None:
    """A scenario of any GPU model runs ``static`` without naming a layout: each model gets the
    A100-80GB default's shape in its own profiles."""
    gpu = default_catalog().model(model)
    small = min((p for p in gpu.profiles.values() if not p.variant), key=lambda p: (p.compute, p.slots))
    scenario = Scenario(
        nodes=[NodeGroup(name="n", model=model, gpus=1)],
        workload=Workload(pods=[{"arrival_s": 0, "profile": small.name, "duration_s": 60}]),
        policies=["static"],
    )
    layout = scenario.static_layout_for(gpu)
    assert layout.get(small.name) == 2 and len(layout) >= 2  # two of the smallest, and larger devices
    assert sum(gpu.profile(p).compute * n for p, n in layout.items()) == gpu.compute_slices  # nothing idle
    assert sim_nodes.arrange(gpu, layout)  # placeable
    result = simulate_policy(scenario, scenario.all_pods(), "static", nvml_factory)
    assert result.completed == 1 and result.layouts == {",".join(f"{p}={n}" for p, n in sorted(layout.items())): 1}


def test_static_layout_per_model_and_its_errors(tmp_path: Path) -> None:
    from nos.cli import simulate as cli

    catalog = default_catalog()
    assert Scenario(nodes=[NodeGroup(model="H200-141GB")]).static_layout_for(catalog.model("H200-141GB")) == {
        "1g.18gb": 2,
        "2g.35gb": 1,
        "3g.71gb": 1,
    }
    a30 = Scenario(nodes=[NodeGroup(model="A30-24GB")])
    assert a30.static_layout_for(catalog.model("A30-24GB")) == {"1g.6gb": 2, "2g.12gb": 1}  # an A30 has no 3g
    given = Scenario(nodes=[NodeGroup(model="A30-24GB")], static_layout={"4g.24gb": 1})
    assert given.static_layout_for(catalog.model("A30-24GB")) == {"4g.24gb": 1}
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        "nodes: [{name: a, model: A100-80GB, gpus: 1}, {name: h, model: H200-141GB, gpus: 1}]\n"
        "static_layout: {1g.10gb: 7}\n"
    )
    result = CliRunner().invoke(cli.simulate, [str(mixed)])
    assert result.exit_code == 2
    assert "static_layout: profiles ['1g.10gb'] do not exist on H200-141GB (nos models lists them)" in result.output
    mixed.write_text("nodes: [{name: h, model: H200-141GB, gpus: 1, initial_layout: {7g.80gb: 1}}]\n")
    result = CliRunner().invoke(cli.simulate, [str(mixed)])
    assert result.exit_code == 2 and "nodes.0.initial_layout: profiles ['7g.80gb'] do not exist" in result.output


def test_cli_option_errors_come_before_the_run(tmp_path: Path) -> None:
    from nos.cli import simulate as cli

    for args, message in (
        (["--duration", "0"], "Invalid value for --duration: '0' is not a positive duration"),
        (["--trace", "--max-run", "0m"], "Invalid value for --max-run: '0m' is not a positive duration"),
        (["--plot", str(tmp_path / "missing" / "x.png")], f"{tmp_path / 'missing'} is not a writable folder"),
    ):
        result = CliRunner().invoke(cli.simulate, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "started" not in result.stderr  # refused before any policy ran
    result = CliRunner().invoke(cli.simulate, ["--model", "H200-141GB"])  # the default workload names A100 profiles
    assert result.exit_code == 2
    assert result.output.startswith("simulate: profiles ['1g.10gb', '1g.20gb'")  # no "(top level)" prefix


def test_the_table_says_which_profiles_were_never_scheduled(tmp_path: Path) -> None:
    from nos.cli import simulate as cli

    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "nodes: [{model: A100-80GB, gpus: 1}]\nstatic_layout: {1g.10gb: 7}\nduration_s: 3600\n"
        "workload: {pods: [{arrival_s: 0, profile: 3g.40gb, duration_s: 60},"
        " {arrival_s: 0, profile: 1g.10gb, duration_s: 60}]}\n"
    )
    result = CliRunner().invoke(cli.simulate, [str(scenario), "--policies", "static,nos"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # the caption wraps
    assert "never scheduled, by profile: static: 3g.40gb 1 pending:" in text  # nos scheduled both: not listed


def test_every_json_key_is_documented() -> None:
    """``--json``'s keys are a documented interface (docs/simulate.md, Metrics)."""
    from nos.cli import simulate as cli

    scenario = Path(__file__).parents[2] / "examples" / "scenario.yaml"
    result = CliRunner().invoke(
        cli.simulate, [str(scenario), "--policies", "ideal,best-static,nos", "--duration", "20m", "--json"]
    )
    trace = CliRunner().invoke(cli.simulate, ["--trace", "--sample", "10", "--policies", "ideal", "--json"])
    assert result.exit_code == trace.exit_code == 0, result.output + trace.output
    doc = json.loads(result.stdout)
    doc["scenario"].update(json.loads(trace.stdout)["scenario"])  # a trace's own keys
    docs = (Path(__file__).parents[2] / "docs" / "simulate.md").read_text()
    keys = set(doc) | set(doc["parameters"]) | set(doc["scenario"])
    for policy in doc["policies"].values():
        keys |= set(policy) | set(policy.get("vsIdeal", {}))
        keys |= {k for profile in policy["byProfile"].values() for k in profile}
    missing = sorted(k for k in keys if f"`{k}`" not in docs and f"`{k}." not in docs and f"`vsIdeal.{k}`" not in docs)
    assert not missing, f"undocumented --json keys: {missing}"
