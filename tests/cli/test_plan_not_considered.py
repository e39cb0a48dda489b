"""``nos plan`` says what it leaves out and why ("Not considered"), and words bad input plainly."""

from __future__ import annotations

import copy
import json
from typing import Any

from click.testing import CliRunner

from nos.cli.main import cli
from tests.cli.test_plan_cli import _node, _pending, _snapshot


def _run(text: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["plan", *args, "-"], input=text)


def _not_considered(*objects: dict[str, Any]) -> dict[str, str]:
    result = _run(_snapshot(*objects), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    return {i["object"]: i["reason"] for i in doc["notConsidered"]}


def test_pending_pod_without_unschedulable_is_listed_with_the_reason() -> None:
    waiting = _pending("waiting", "1g.10gb")
    waiting["status"]["conditions"] = []
    reasons = _not_considered(_node("a100", "NVIDIA-A100-SXM4-80GB"), waiting, _pending("ok", "1g.10gb"))
    assert "Unschedulable" in reasons["pod ns/waiting"]
    assert "pod ns/ok" not in reasons


def test_whole_gpu_request_is_listed() -> None:
    whole = _pending("whole", "1g.10gb")
    whole["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    reasons = _not_considered(_node("a100", "NVIDIA-A100-SXM4-80GB"), whole)
    assert "whole GPUs (nvidia.com/gpu)" in reasons["pod ns/whole"]


def test_annotations_under_the_label_domain_are_listed() -> None:
    node = _node("a100", "NVIDIA-A100-SXM4-80GB", {"nos.nebuly.ai/spec-gpu-0-1g.10gb": "1"})
    reasons = _not_considered(node)
    assert "nos.nebuly.ai/spec-gpu-0-1g.10gb ignored" in reasons["node a100"]
    assert "nos.nebuly.com/" in reasons["node a100"]


def test_partitioning_label_other_than_mig_is_listed() -> None:
    mps = _node("mps-node", "NVIDIA-A100-SXM4-80GB")
    mps["metadata"]["labels"]["nos.nebuly.com/gpu-partitioning"] = "mps"
    reasons = _not_considered(_node("a100", "NVIDIA-A100-SXM4-80GB"), mps)
    assert "gpu-partitioning=mps" in reasons["node mps-node"]


def test_text_output_has_the_section() -> None:
    waiting = _pending("waiting", "1g.10gb")
    waiting["status"]["conditions"] = []
    result = _run(_snapshot(_node("a100", "NVIDIA-A100-SXM4-80GB"), waiting))
    assert result.exit_code == 0
    section = result.stdout.split("Not considered (1):\n", 1)[1]
    assert section.startswith("  pod ns/waiting: Pending but without the PodScheduled=False/Unschedulable")


def test_fractional_mig_quantity_is_not_one_device() -> None:
    half = _pending("half", "1g.10gb")
    half["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/mig-1g.10gb": "500m"}}
    result = _run(_snapshot(_node("a100", "NVIDIA-A100-SXM4-80GB"), half), "--json")
    doc = json.loads(result.stdout)
    assert doc["placed"] == []
    [unplaced] = doc["unplaced"]
    assert unplaced["pod"] == "ns/half" and "500m" in unplaced["reason"] and "whole numbers" in unplaced["reason"]


def test_gpu_count_that_is_not_a_number_says_so() -> None:
    node = _node("a100", "NVIDIA-A100-SXM4-80GB")
    node["metadata"]["labels"]["nvidia.com/gpu.count"] = "abc"
    other = copy.deepcopy(_node("ok", "NVIDIA-A100-SXM4-80GB"))
    result = _run(_snapshot(node, other), "--json")
    problems = json.loads(result.stdout)["problems"]
    assert any("nvidia.com/gpu.count='abc' is not a GPU count" in p for p in problems), problems
    assert not any("no nvidia.com/gpu.count label" in p for p in problems)


def test_scalar_document_is_worded_plainly() -> None:
    result = _run("42\n")
    assert result.exit_code == 2
    assert "found a number (42)" in result.stderr and "a int" not in result.stderr
