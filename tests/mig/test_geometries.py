"""``knownMigGeometries`` parsing, in the original nos' Helm value format."""

from __future__ import annotations

from pathlib import Path

import pytest

from nos.mig.geometries import GeometryConfigError, load_known_geometries, parse_known_geometries

ORIGINAL_DEFAULTS = """
knownMigGeometries:
  - models: ["A30"]
    allowedGeometries:
      - 1g.6gb: 4
      - 1g.6gb: 2
        2g.12gb: 1
      - 2g.12gb: 2
      - 4g.24gb: 1
  - models: ["A100-SXM4-40GB", "NVIDIA-A100-40GB-PCIe"]
    allowedGeometries:
      - 1g.5gb: 7
      - 2g.10gb: 3
        1g.5gb: 1
      - 3g.20gb: 2
      - 7g.40gb: 1
  - models: ["NVIDIA-A100-80GB-PCIe", "NVIDIA-A100-SXM4-80GB"]
    allowedGeometries:
      - 1g.10gb: 7
      - 3g.20gb: 2
      - 3g.40gb: 2
      - 7g.79gb: 1
"""


def test_original_format_with_top_level_key() -> None:
    result, warnings = parse_known_geometries(ORIGINAL_DEFAULTS)
    assert result["A30-24GB"] == [{"1g.6gb": 4}, {"1g.6gb": 2, "2g.12gb": 1}, {"2g.12gb": 2}, {"4g.24gb": 1}]
    assert result["A100-40GB"] == [{"1g.5gb": 7}, {"2g.10gb": 3, "1g.5gb": 1}, {"3g.20gb": 2}, {"7g.40gb": 1}]
    # the 80GB card keeps only what exists on it, once even though two labels name it
    assert result["A100-80GB"] == [{"1g.10gb": 7}, {"3g.40gb": 2}]
    text = "\n".join(warnings)
    assert "unknown GPU model 'NVIDIA-A100-40GB-PCIe'" in text
    assert "geometry {3g.20gb: 2} dropped: no profile 3g.20gb" in text
    assert "geometry {7g.79gb: 1} dropped: no profile 7g.79gb" in text
    assert sum("7g.79gb" in w for w in warnings) == 2, "one warning per label naming the 80GB card"


def test_plain_list_and_model_names() -> None:
    text = "- models: [A100-80GB, nvidia-h100-80gb-hbm3]\n  allowedGeometries: [{4g.40gb: 1, 3g.40gb: 1}]\n"
    result, warnings = parse_known_geometries(text)
    assert warnings == []
    assert result == {"A100-80GB": [{"4g.40gb": 1, "3g.40gb": 1}], "H100-80GB": [{"4g.40gb": 1, "3g.40gb": 1}]}


def test_zero_counts_are_dropped_from_the_geometry() -> None:
    result, _ = parse_known_geometries("- models: [NVIDIA-A30]\n  allowedGeometries: [{4g.24gb: 1, 1g.6gb: 0}]")
    assert result == {"A30-24GB": [{"4g.24gb": 1}]}


@pytest.mark.parametrize(
    "geometry",
    [
        "{1g.10gb: 8}",  # 8 slots' worth of 1g, but slot 7 takes no 1g
        "{4g.40gb: 1, 3g.40gb: 1, 1g.10gb: 1}",  # 8 compute slices
        "{3g.40gb: 3}",
        "{1g.10gb+me: 2}",  # one media instance per GPU
        "{2g.20gb: 4}",
    ],
)
def test_non_placeable_geometry_dropped(geometry: str) -> None:
    text = f"- models: [NVIDIA-A100-SXM4-80GB]\n  allowedGeometries: [{geometry}, {{7g.80gb: 1}}]"
    result, warnings = parse_known_geometries(text)
    assert result == {"A100-80GB": [{"7g.80gb": 1}]}
    assert len(warnings) == 1 and "dropped: not placeable" in warnings[0]


def test_negative_count_dropped() -> None:
    result, warnings = parse_known_geometries("- models: [NVIDIA-A30]\n  allowedGeometries: [{1g.6gb: -1}]")
    assert result == {}
    assert any("negative count" in w for w in warnings)
    assert any("no usable geometry for A30-24GB" in w for w in warnings)


def test_only_unknown_models() -> None:
    result, warnings = parse_known_geometries("- models: [NVIDIA-T4]\n  allowedGeometries: [{1g.5gb: 1}]")
    assert result == {}
    assert warnings == ["knownMigGeometries: entry 0: unknown GPU model 'NVIDIA-T4' ignored"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [\n", "not YAML"),
        ("just words", "expected a list"),
        ("{a: 1}", "expected a list"),
        ("", "expected a list"),
        ("knownMigGeometries: {models: [A30]}", "expected a list"),
        ("- models: [NVIDIA-A30]", "entry 0: Field required at ('allowedGeometries',)"),
        ("- allowedGeometries: [{1g.6gb: 4}]", "entry 0: Field required at ('models',)"),
        ("- models: []\n  allowedGeometries: [{1g.6gb: 4}]", "entry 0:"),
        ("- models: [NVIDIA-A30]\n  allowedGeometries: [{1g.6gb: four}]", "entry 0:"),
        ("- models: [NVIDIA-A30]\n  allowedGeometries: [{1g.6gb: 4}]\n  extra: 1", "entry 0:"),
        ("- models: [NVIDIA-A30]\n  allowedGeometries: [{1g.6gb: 4}]\n- 3", "entry 1:"),
    ],
)
def test_bad_config_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(GeometryConfigError) as err:
        parse_known_geometries(text, source="geo.yaml")
    assert str(err.value).startswith("geo.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value), "the CLI prints the message as one line"


def test_yaml_error_gives_the_line() -> None:
    with pytest.raises(GeometryConfigError, match=r"geo\.yaml: not YAML at line 3: mapping values"):
        parse_known_geometries("- models: [A30]\n  allowedGeometries:\n  - 1g.6gb: 4: 4\n", source="geo.yaml")


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "geo.yaml"
    path.write_text(ORIGINAL_DEFAULTS)
    result, warnings = load_known_geometries(path)
    assert result["A100-80GB"] == [{"1g.10gb": 7}, {"3g.40gb": 2}]
    assert all(w.startswith(str(path)) for w in warnings)
    with pytest.raises(GeometryConfigError, match="cannot read"):
        load_known_geometries(tmp_path / "absent.yaml")
