"""``nos models``: terminal view, ``--json`` (NVML placements), and the products the catalog resolves."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nos.cli.models import models
from nos.mig.catalog import default_catalog


def _json() -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(models, ["--json"])
    assert result.exit_code == 0, result.output
    return {m["name"]: m for m in json.loads(result.output)}


def _profile(model: dict[str, object], name: str) -> dict[str, object]:
    [p] = [p for p in model["profiles"] if p["name"] == name]  # type: ignore[attr-defined]
    return p  # type: ignore[no-any-return]


def test_json_gives_nvml_placements_on_the_models_grid() -> None:
    by_name = _json()
    rtx = _profile(by_name["RTX-PRO-6000-96GB"], "1g.24gb")
    assert rtx["nvmlPlacement"] == {"starts": [0, 3, 6, 9], "size": 3}
    assert _profile(by_name["RTX-PRO-6000-96GB"], "2g.48gb")["nvmlPlacement"] == {"starts": [0, 6], "size": 6}
    assert _profile(by_name["RTX-PRO-6000-96GB"], "4g.96gb")["nvmlPlacement"] == {"starts": [0], "size": 12}
    a100 = _profile(by_name["A100-80GB"], "1g.10gb")
    assert a100["nvmlPlacement"] == {"starts": [0, 1, 2, 3, 4, 5, 6], "size": 1}
    assert a100["resource"] == "nvidia.com/mig-1g.10gb" and a100["maxCount"] == 7
    assert by_name["A100-80GB"]["verified"] is True and by_name["RTX-PRO-6000-96GB"]["verified"] is False


def test_json_lists_the_rtx_pro_6000_variants() -> None:
    rtx = _json()["RTX-PRO-6000-96GB"]
    names = {p["name"] for p in rtx["profiles"]}  # type: ignore[attr-defined]
    assert {"1g.24gb+me", "1g.24gb+gfx", "1g.24gb-me", "1g.24gb+me.all", "2g.48gb+gfx", "4g.96gb+gfx"} <= names
    assert _profile(rtx, "1g.24gb+me")["maxCount"] == 1
    assert _profile(rtx, "1g.24gb-me")["resource"] == "nvidia.com/mig-1g.24gb-me"


def test_terminal_view_is_one_block_per_model_in_short_lines() -> None:
    result = CliRunner().invoke(models, [])
    assert result.exit_code == 0
    assert "|" not in result.output
    assert max(len(line) for line in result.output.splitlines() if not line.startswith("  products:")) < 110
    assert "RTX-PRO-6000-96GB: 4 memory slots, 4 compute slices, NOT verified against a driver" in result.output


@pytest.mark.parametrize(
    ("label", "model"),
    [
        ("NVIDIA-H800", "H800-80GB"),
        ("NVIDIA-H800-PCIe", "H800-80GB"),
        ("NVIDIA-H800-NVL", "H800-NVL-94GB"),
        ("NVIDIA-A800-SXM4-80GB", "A800-80GB"),
        ("NVIDIA-A800-80GB-PCIe", "A800-80GB"),
        ("NVIDIA-A800-80GB-PCIe-LC", "A800-80GB"),
        ("NVIDIA-A800-SXM4-40GB", "A800-40GB"),
        ("NVIDIA-A800-40GB-Active", "A800-40GB"),
        ("NVIDIA-GH200-120GB", "H100-96GB"),
        ("NVIDIA-GB200", "GB200-186GB"),
        ("NVIDIA-GB300", "GB300-278GB"),
        ("NVIDIA-H20-3e", "H20-3e-141GB"),
        ("NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition-MIG-1g.24gb", "RTX-PRO-6000-96GB"),
    ],
)
def test_product_label_resolves(label: str, model: str) -> None:
    found = default_catalog().model_for_product(label)
    assert found is not None and found.name == model


def test_new_products_profile_names() -> None:
    catalog = default_catalog()
    gb200 = catalog.model("GB200-186GB")
    assert [p for p in gb200.profiles if "+" not in p] == [
        "1g.23gb",
        "1g.47gb",
        "2g.47gb",
        "3g.93gb",
        "4g.93gb",
        "7g.186gb",
    ]
    gb300 = catalog.model("GB300-278GB")
    assert gb300.full_profile.name == "7g.278gb" and "1g.35gb" in gb300.profiles
    for name in ("H800-80GB", "A800-80GB", "A800-40GB", "H800-NVL-94GB", "GB200-186GB", "GB300-278GB", "H20-3e-141GB"):
        assert not catalog.model(name).verified, name
