"""``nos plan``: the offline planner on a snapshot, text and JSON, and its errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from nos.cli.main import cli
from nos.contract.annotations import SPEC_PLAN, decode_spec, is_spec_key
from nos.mig.catalog import default_catalog
from nos.mig.layout import Instance, layout_errors

EXAMPLE = Path(__file__).parents[2] / "examples" / "snapshot.yaml"
MANAGED = ["gpu-a100-1", "gpu-a100-2", "gpu-a30-1", "gpu-h100-1"]
CAT = default_catalog()


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["plan", *args], input=stdin)


def plan_json(*args: str, stdin: str | None = None) -> dict[str, Any]:
    result = run("--json", *args, stdin=stdin)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_text_plan_of_the_example() -> None:
    result = run(str(EXAMPLE))
    assert result.exit_code == 0, result.output
    for name in MANAGED:
        assert f"node {name} (" in result.stdout
    assert "cpu-1" not in result.stdout, "an unlabelled node is not part of the plan"
    assert "Left pending" in result.stdout
    assert "research/too-hungry" in result.stdout and "default/old-profile" in result.stdout


def test_devices_held_for_profile_shares_are_shown_when_turned_on() -> None:
    shown = run("--shares", "1", str(EXAMPLE))
    assert "held for its profile's share: " in shown.stdout
    assert "Profiles below their share of the demand" in shown.stdout
    doc = plan_json("--shares", "1", str(EXAMPLE))
    assert doc["held"] and all(not h["existing"] for h in doc["held"])  # spare slots of empty GPUs
    assert {s["resource"] for s in doc["shares"] if s["wanted"]} >= {"nvidia.com/mig-1g.10gb"}
    off = run(str(EXAMPLE))  # off by default
    assert off.exit_code == 0 and "held for" not in off.stdout and "below their share" not in off.stdout
    assert plan_json(str(EXAMPLE))["held"] == [] and plan_json(str(EXAMPLE))["shares"] == []
    assert run("--shares", "1.5", str(EXAMPLE)).exit_code == 2  # a fraction of the share


def test_an_expected_mix_sets_the_shares_and_holds_only_spare_capacity() -> None:
    # the example's pods ask for no whole GPU; the operator expects mostly whole-GPU jobs
    mixed = plan_json("--shares", "1", "--mix", "7g.80gb=6,1g.10gb=1", str(EXAMPLE))
    plain = plan_json("--shares", "1", str(EXAMPLE))
    whole = {s["resource"]: s for s in mixed["shares"]}["nvidia.com/mig-7g.80gb"]
    assert whole["target"] > whole["have"] and whole["wanted"] >= 1  # nothing of it running: one device
    assert any(h["profile"] == "7g.80gb" for h in mixed["held"])
    assert not any(h["profile"] == "7g.80gb" for h in plain["held"])
    # every pod the plain plan places is placed with the mix too: holds never take a pod's place
    assert {p["pod"] for p in mixed["placed"]} >= {p["pod"] for p in plain["placed"]}
    text = run("--shares", "1", "--mix", "7g.80gb=6,1g.10gb=1", str(EXAMPLE))
    assert "Profiles below their share of the expected mix (--mix)" in text.stdout
    alone = run("--mix", "7g.80gb=1", str(EXAMPLE))
    assert alone.exit_code == 0 and "--mix has no effect with --shares 0" in alone.stderr
    bad_mixes = (("7g.80gb", "not PROFILE=WEIGHT"), ("7g.80gb=-1", "not PROFILE=WEIGHT"), ("9g.1gb=1", "9g.1gb"))
    for bad, message in bad_mixes:
        result = run("--shares", "1", "--mix", bad, str(EXAMPLE))
        assert result.exit_code == 2 and message in result.output, result.output


def _check_plan_json(doc: dict[str, Any]) -> None:
    assert isinstance(doc["nodes"], dict) and isinstance(doc["placed"], list) and isinstance(doc["unplaced"], list)
    for name, n in doc["nodes"].items():
        annotations = n["annotations"]
        assert annotations and all(is_spec_key(k) for k in annotations), name
        assert all(isinstance(v, str) for v in annotations.values())
        decoded = decode_spec(annotations)
        assert decoded.problems == []
        for g in n["gpus"]:
            assert isinstance(g["index"], int)
            instances = [Instance(i["start"], i["profile"], i["used"]) for i in g["instances"]]
            assert all(isinstance(i["used"], bool) for i in g["instances"])
            model = CAT.model(g["model"])
            assert layout_errors(model, instances) == []
            # the annotations written are the planned layout
            assert decoded.gpus[g["index"]].placements == tuple(sorted(i.freed() for i in instances))
    for p in doc["placed"]:
        assert set(p) >= {"pod", "node", "gpu"}
        assert p["node"] in doc["nodes"]
        assert p["gpu"] in [g["index"] for g in doc["nodes"][p["node"]]["gpus"]]
    for u in doc["unplaced"]:
        assert isinstance(u["pod"], str) and isinstance(u["reason"], str) and u["reason"]


def test_json_plan_of_the_example() -> None:
    doc = plan_json(str(EXAMPLE))
    _check_plan_json(doc)
    assert sorted(doc["nodes"]) == MANAGED
    placed = {p["pod"] for p in doc["placed"]}
    unplaced = {u["pod"] for u in doc["unplaced"]}
    assert not placed & unplaced
    assert {"default/no-toleration", "research/too-hungry", "default/old-profile"} <= unplaced
    assert {"serving/serve-llama-0", "serving/serve-llama-1", "research/train-big", "media/a30-job"} <= placed
    # every placed pod gets an instance of its profile on its GPU, and no instance serves two pods
    demand: Counter[tuple[str, int, str]] = Counter((p["node"], p["gpu"], p["profile"]) for p in doc["placed"])
    for (node, gpu, profile), n in demand.items():
        g = next(g for g in doc["nodes"][node]["gpus"] if g["index"] == gpu)
        free = sum(1 for i in g["instances"] if i["profile"] == profile and not i["used"])
        assert free >= n, (node, gpu, profile)
    # in-use instances are never moved or removed
    for n in doc["nodes"].values():
        for g in n["gpus"]:
            used_now = {(i["profile"], i["start"]) for i in g["current"] if i["used"]}
            assert used_now <= {(i["profile"], i["start"]) for i in g["instances"]}
    # a new plan id is written only on nodes whose spec changes
    for n in doc["nodes"].values():
        if n["write"]:
            assert n["annotations"][SPEC_PLAN] == doc["planId"]


def test_plan_id_option() -> None:
    doc = plan_json("--plan-id", "12345", str(EXAMPLE))
    assert doc["planId"] == "12345"
    assert doc["nodes"]["gpu-h100-1"]["annotations"][SPEC_PLAN] == "12345"


def test_stdin() -> None:
    from_file = plan_json(str(EXAMPLE))
    from_stdin = plan_json("-", stdin=EXAMPLE.read_text())
    assert from_stdin == from_file


def _fails(result: Any) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nos plan:")
    assert result.stdout == ""
    return lines[0]


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("kind: List\nitems: [\n  - a: b: c\n")
    assert "is not valid YAML at line" in _fails(run(str(path)))


def test_no_nodes(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("kind: List\nitems: []\n")
    assert "holds no Node objects" in _fails(run(str(path)))


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read" in _fails(run(str(tmp_path / "absent.yaml")))


def _snapshot(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(objects)})


def _node(name: str, product: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "nos.nebuly.com/gpu-partitioning": "mig",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": "1",
            },
            "annotations": annotations or {},
        },
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}},
    }


def _pending(name: str, profile: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {f"nvidia.com/mig-{profile}": 1}}}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def test_unknown_gpu_model() -> None:
    text = _snapshot(_node("t4-node", "NVIDIA-T4"), _node("ok", "NVIDIA-A100-SXM4-80GB"))
    line = _fails(run("-", stdin=text))
    assert "t4-node" in line and "NVIDIA-T4" in line


def test_unlabelled_t4_is_fine() -> None:
    t4 = _node("t4-node", "NVIDIA-T4")
    del t4["metadata"]["labels"]["nos.nebuly.com/gpu-partitioning"]
    doc = plan_json("-", stdin=_snapshot(t4, _node("ok", "NVIDIA-A100-SXM4-80GB")))
    assert list(doc["nodes"]) == ["ok"]


def test_no_managed_node_warns() -> None:
    t4 = _node("t4", "NVIDIA-T4")
    del t4["metadata"]["labels"]["nos.nebuly.com/gpu-partitioning"]
    result = run("-", stdin=_snapshot(t4))
    assert result.exit_code == 0
    assert "warning: no node is labelled" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [("- models: [\n", "not YAML"), ("{a: 1}", "expected a list")],
)
def test_bad_geometries_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "geo.yaml"
    path.write_text(text)
    assert message in _fails(run("--geometries", str(path), str(EXAMPLE)))
    assert "cannot read" in _fails(run("--geometries", str(tmp_path / "absent.yaml"), str(EXAMPLE)))


def test_bad_catalog_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.yaml"
    path.write_text("shapes: {}\nmodels: [{name: x}]\n")
    assert "invalid MIG catalog" in _fails(run("--catalog", str(path), str(EXAMPLE)))


def test_geometries_restrict_the_plan(tmp_path: Path) -> None:
    text = _snapshot(
        _node("fresh", "NVIDIA-A100-SXM4-80GB"),
        _pending("a", "1g.10gb"),
        _pending("b", "2g.20gb"),
    )
    free = plan_json("-", stdin=text)
    _check_plan_json(free)
    layout = Counter(i["profile"] for i in free["nodes"]["fresh"]["gpus"][0]["instances"])
    assert layout["1g.10gb"] >= 1 and layout["2g.20gb"] >= 1
    assert dict(layout) not in ({"1g.10gb": 7}, {"3g.40gb": 2})

    geo = tmp_path / "geo.yaml"
    geo.write_text(
        "knownMigGeometries:\n"
        "- models: [NVIDIA-A100-SXM4-80GB]\n"
        "  allowedGeometries:\n"
        "  - {1g.10gb: 7}\n"
        "  - {2g.20gb: 3, 1g.10gb: 1}\n"
        "  - {3g.40gb: 2}\n"
    )
    result = CliRunner().invoke(cli, ["plan", "--json", "--geometries", str(geo), "-"], input=text)
    assert result.exit_code == 0, result.output
    restricted = json.loads(result.stdout)
    _check_plan_json(restricted)
    layout = Counter(i["profile"] for i in restricted["nodes"]["fresh"]["gpus"][0]["instances"])
    assert dict(layout) == {"2g.20gb": 1, "1g.10gb": 1}  # within {2g.20gb: 3, 1g.10gb: 1}; spare slots empty
    assert {p["pod"] for p in restricted["placed"]} == {"ns/a", "ns/b"}

    # a pod whose profile no allowed geometry offers stays pending
    geo.write_text("- models: [A100-80GB]\n  allowedGeometries: [{1g.10gb: 7}]\n")
    result = CliRunner().invoke(cli, ["plan", "--json", "--geometries", str(geo), "-"], input=text)
    assert result.exit_code == 0, result.output
    restricted = json.loads(result.stdout)
    assert [p["pod"] for p in restricted["placed"]] == ["ns/a"]
    assert [u["pod"] for u in restricted["unplaced"]] == ["ns/b"]
    assert dict(Counter(i["profile"] for i in restricted["nodes"]["fresh"]["gpus"][0]["instances"])) == {"1g.10gb": 1}


def test_geometry_warnings_go_to_stderr(tmp_path: Path) -> None:
    geo = tmp_path / "geo.yaml"
    geo.write_text("- models: [NVIDIA-A100-SXM4-80GB]\n  allowedGeometries: [{3g.20gb: 2}, {7g.80gb: 1}]\n")
    result = run("--json", "--geometries", str(geo), str(EXAMPLE))
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "3g.20gb" in result.stderr
    json.loads(result.stdout)


def test_fresh_node_gets_whole_gpu_instances() -> None:
    doc = plan_json("-", stdin=_snapshot(_node("fresh", "NVIDIA-H200")))
    gpus = doc["nodes"]["fresh"]["gpus"]
    assert [g["instances"] for g in gpus] == [[{"profile": "7g.141gb", "start": 0, "used": False}]]
    assert doc["nodes"]["fresh"]["annotations"]["nos.nebuly.com/spec-gpu-0-7g.141gb"] == "1"


def test_budget_progress_and_search_status() -> None:
    result = run("--progress", "--budget", "0.5", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    for stage in ("reading", "read 5 node(s)", "managed node(s)", "planned:", "checked"):
        assert stage in result.stderr, stage
    search = next(line for line in result.stdout.splitlines() if line.startswith("Search: "))
    assert "(;" not in search and not search.endswith("()"), search  # a note with no empty parts
    doc = plan_json("--no-progress", str(EXAMPLE))
    assert set(doc["search"]) == {"stage", "optimal", "note"} and isinstance(doc["search"]["optimal"], bool)
    assert all(p["devices"][0]["gpu"] == p["gpu"] for p in doc["placed"])
    bad = run("--budget", "0", str(EXAMPLE))
    assert bad.exit_code == 2 and "budget" in bad.stderr


def test_json_snapshot(tmp_path: Path) -> None:
    listed = yaml.safe_load(EXAMPLE.read_text())
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(listed))
    assert plan_json(str(path))["placed"] == plan_json(str(EXAMPLE))["placed"]


def test_json_plan_has_one_line_per_node_and_pod() -> None:
    """The JSON plan is written by the C encoder, one line per node and per placed pod: the same
    document as ``Plan.to_json`` and still a single JSON value."""
    result = run("--json", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    lines = result.stdout.splitlines()
    for name in doc["nodes"]:
        [line] = [x for x in lines if x.startswith(f'    "{name}": {{')]
        assert json.loads(line.split(": ", 1)[1].rstrip(",")) == doc["nodes"][name]
    for placed in doc["placed"]:
        assert f"    {json.dumps(placed)}" in lines or f"    {json.dumps(placed)}," in lines
    from nos.cli.plan import json_lines

    sample = {"a": {}, "b": [], "c": {"x": [1, {"y": None}]}, "d": [1.5, "two"], "e": "f"}
    assert json.loads(json_lines(sample)) == sample


def test_nos_plan_imports_only_its_own_command() -> None:
    """Sub-commands are imported when looked up: ``nos plan`` does not load the agent's or the
    partitioner's modules (aiohttp, gRPC stubs), and numpy only when a MIP is solved."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nos.cli.main import cli\n"
        f"cli(['plan', '--budget', '0.01', {str(EXAMPLE)!r}], standalone_mode=False)\n"
        "loaded = sorted(m for m in ('nos.cli.agent', 'nos.cli.partitioner', 'nos.cli.simulate', 'aiohttp',"
        " 'numpy') if m in sys.modules)\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in out.stderr, out.stderr
    assert sorted(cli.commands) == ["agent", "doctor", "models", "partitioner", "plan", "simulate"]
    assert cli.commands["plan"].name == "plan"
