"""``nos simulate --trace`` as a user runs it: the shipped trace, load sizing, progress without a
terminal, and the JSON document."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nos.mig.catalog import default_catalog
from nos.sim.load import LOADS, nodes_for_load, offered_load, parse_load
from nos.sim.progress import LineProgress
from nos.sim.scenario import PodSpec
from nos.sim.trace import TraceTask, read_trace, shipped_trace, trace_mix

A100 = default_catalog().model("A100-80GB")


def test_the_shipped_trace_is_package_data_with_its_attribution() -> None:
    with shipped_trace() as path:
        tasks = read_trace(path)
        readme = (path.parent / "README.md").read_text()
    assert len(tasks) == 7002 and all(t.duration_s >= 1 for t in tasks)
    assert "CC BY 4.0" in readme and "alibaba/clusterdata" in readme and "USENIX ATC 2023" in readme


def test_load_sizes_the_cluster() -> None:
    pods = [PodSpec(name=f"p{i}", arrival_s=0, profile="7g.80gb", duration_s=3600) for i in range(16)]
    # 16 whole GPUs busy for the first hour of a 2 h horizon: 8 GPU-equivalents over the horizon
    assert offered_load(pods, A100, 8, 7200) == pytest.approx(1.0)
    assert nodes_for_load(pods, A100, 8, 7200, 0.5) == 2 and nodes_for_load(pods, A100, 8, 7200, 1.0) == 1
    assert nodes_for_load(pods, A100, 2, 7200, LOADS["busy"]) == 5  # 8 / 0.8 = 10 GPUs
    assert parse_load("overloaded") == 1.2 and parse_load("0.7") == 0.7
    with pytest.raises(ValueError, match="light, busy, overloaded"):
        parse_load("heavy")


def test_line_progress_estimates_the_time_left() -> None:
    out, now = io.StringIO(), [0.0]
    lines = LineProgress(out, every_s=5, clock=lambda: now[0])
    lines.start("nos", 2, 5, 3600)
    now[0] = 2
    lines.update(600)  # within 5 s of the last line: quiet
    now[0] = 10
    lines.update(900)  # a quarter of the virtual time in 10 s: about 30 s left
    now[0] = 40
    lines.finish()
    text = out.getvalue().splitlines()
    assert len(text) == 3 and "[2/5] nos: started" in text[0]
    assert "25%" in text[1] and "10s spent" in text[1] and "about 30s left" in text[1]
    assert text[2].endswith("done in 40s")


def test_trace_replay_from_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from nos.cli import simulate as cli

    monkeypatch.chdir("/")  # nothing is resolved from the working directory or the source tree
    result = CliRunner().invoke(
        cli.simulate, ["--trace", "--sample", "40", "--load", "overloaded", "--policies", "ideal,nos", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    scenario = doc["scenario"]
    assert scenario["tasks"] == 40 and "shipped sample" in scenario["trace"]
    assert scenario["loadRequested"] == "overloaded" and scenario["offeredLoad"] > 0
    assert scenario["nodes"][0]["count"] == 1  # 40 tasks ask for less than one node: the smallest cluster
    assert set(doc["policies"]) == {"ideal", "nos"} and set(doc["wallSeconds"]) == {"ideal", "nos"}
    assert doc["policies"]["nos"]["byProfile"]  # per profile: pods, mean pending, never scheduled
    # stderr is not a terminal here: progress comes as lines, one per policy start and end at least
    progress = [line for line in result.stderr.splitlines() if line.startswith("nos simulate [")]
    assert any("[1/2] ideal: started" in line for line in progress) and any("nos: done in" in line for line in progress)
    both = CliRunner().invoke(cli.simulate, ["--trace", "--nodes", "2", "--load", "busy"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = CliRunner().invoke(cli.simulate, ["--trace", "--sample", "zero"])
    assert bad.exit_code == 2 and "'zero'" in bad.output


def test_best_static_is_configured_for_the_whole_trace() -> None:
    """An operator knows the workload's mix, not which tasks a sample draws: best-static's mix is the
    whole trace's for every sample (its level is the sample's), while hindsight-static's layouts
    follow the sample's own pods."""
    from nos.cli import simulate as cli

    docs = []
    for seed in ("1", "2"):
        args = ["--trace", "--sample", "60", "--seed", seed, "--nodes", "1"]
        result = CliRunner().invoke(cli.simulate, [*args, "--policies", "best-static,hindsight-static", "--json"])
        assert result.exit_code == 0, result.output
        docs.append(json.loads(result.stdout))
    with shipped_trace() as path:
        tasks = read_trace(path)
    whole = {p: round(w, 3) for p, w in trace_mix_shares(tasks).items()}
    assert docs[0]["scenario"]["bestStaticMix"] == docs[1]["scenario"]["bestStaticMix"] == whole
    assert docs[0]["policies"]["hindsight-static"]["layouts"] != docs[1]["policies"]["hindsight-static"]["layouts"]
    table = CliRunner().invoke(cli.simulate, [*args, "--policies", "best-static"])
    first = next(iter(whole))
    assert f"best-static configured for: {first} {100 * whole[first]:.1f}%" in table.stdout


def trace_mix_shares(tasks: list[TraceTask]) -> dict[str, float]:
    mix = trace_mix(tasks, A100, 6 * 3600)
    total = sum(mix.values())
    return {p: w / total for p, w in mix.items()}


@pytest.mark.parametrize("model", ["A30-24GB", "H200-141GB"])
def test_trace_replay_on_another_model(model: str) -> None:
    """``--model`` sizes the tasks in that model's profiles; the fixed layouts follow the model too."""
    from nos.cli import simulate as cli

    args = ["--trace", "--sample", "30", "--model", model, "--policies", "static,nos", "--json"]
    result = CliRunner().invoke(cli.simulate, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    profiles = set(default_catalog().model(model).profiles)
    assert set(doc["policies"]["nos"]["byProfile"]) <= profiles
    assert doc["policies"]["nos"]["completed"] == 30
    (static,) = doc["scenario"]["staticLayout"].values()
    assert set(static) <= profiles and static


def test_a_bad_trace_file_gets_the_line_and_column(tmp_path: Path) -> None:
    from nos.cli import simulate as cli

    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\n"
    cases = {
        "a,b\n1,2\n": "not an openb pod list: missing column(s) name, num_gpu, gpu_milli",
        header + "x,1000,1024,1,500,0,100\ny,abc,1024,1,500,0,100\n": "line 3: cpu_milli is 'abc', not an integer",
        header + "x,1000,1024,1,500,0,100\ny,1000\n": "line 3: no num_gpu",
        header + "x,1000,1024,2,1000,0,100\n": "no task with num_gpu == 1",
    }
    for text, message in cases.items():
        trace = tmp_path / "trace.csv"
        trace.write_text(text)
        result = CliRunner().invoke(cli.simulate, ["--trace", str(trace), "--nodes", "1"])
        assert result.exit_code == 2 and f"{trace}" in result.output and message in result.output, result.output
    trace.write_text(header + "x,1000,1024,1,500,0,100\n")
    tasks = read_trace(trace)
    assert [(t.name, t.gpu_milli, t.duration_s, t.qos) for t in tasks] == [("x", 500, 100.0, "")]
