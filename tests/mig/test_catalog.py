"""The bundled MIG catalog matches shared/docs/mig-catalog.md, and broken catalogs are refused."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from nos.mig.catalog import (
    CatalogError,
    annotation_spelling,
    default_catalog,
    load_catalog,
    normalize_product,
    profile_from_annotation,
)

CAT = default_catalog()


def _names(model: str) -> set[str]:
    return set(CAT.model(model).profiles)


# ------------------------------------------------------------------ profile tables of mig-catalog.md

EXPECTED = {
    "A100-40GB": {"1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"},
    "A100-80GB": {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"},
    "H100-80GB": {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"},
    "H100-NVL-94GB": {"1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"},
    "H200-141GB": {"1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"},
    "B200-180GB": {"1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"},
    "A30-24GB": {"1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb"},
}


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_profile_names_match_the_catalog_doc(model: str) -> None:
    assert _names(model) == EXPECTED[model]


# (compute, slots, starts, max) per profile kind, from the table of mig-catalog.md
EIGHT_SLOT = {
    "1g": (1, 1, (0, 1, 2, 3, 4, 5, 6), 7),
    "1g-2m": (1, 2, (0, 2, 4, 6), 4),
    "2g": (2, 2, (0, 2, 4), 3),
    "3g": (3, 4, (0, 4), 2),
    "4g": (4, 4, (0,), 1),
    "7g": (7, 8, (0,), 1),
}
FOUR_SLOT = {"1g": (1, 1, (0, 1, 2, 3), 4), "2g": (2, 2, (0, 2), 2), "4g": (4, 4, (0,), 1)}


@pytest.mark.parametrize("model", [m.name for m in CAT.models if m.memory_slots == 8])
def test_eight_slot_geometry(model: str) -> None:
    m = CAT.model(model)
    assert (m.memory_slots, m.compute_slices) == (8, 7)
    for p in m.profiles.values():
        kind = p.kind.split("+")[0]
        assert (p.compute, p.slots, p.starts, p.max_count if not p.media else EIGHT_SLOT[kind][3]) == (
            EIGHT_SLOT[kind]
        ), p
        if p.media:
            assert p.max_count == 1
    assert m.full_profile.slots == 8 and m.full_profile.name.startswith("7g.")


def test_a30_geometry() -> None:
    m = CAT.model("A30-24GB")
    assert (m.memory_slots, m.compute_slices) == (4, 4)
    for p in m.profiles.values():
        kind = p.kind.split("+")[0]
        compute, slots, starts, mx = FOUR_SLOT[kind]
        assert (p.compute, p.slots, p.starts) == (compute, slots, starts)
        assert p.max_count == (1 if p.media else mx)
    assert m.full_profile.name == "4g.24gb"


def test_profile_memory_and_order() -> None:
    m = CAT.model("A100-80GB")
    assert m.profile("3g.40gb").memory_gb == 40
    assert m.profile("1g.10gb+me").media and not m.profile("1g.10gb").media
    sizes = [p.slots for p in m.profiles.values()]
    assert sizes == sorted(sizes), "profiles are listed smallest first"
    assert m.fill_order[0].name == "7g.80gb"
    assert all(not p.media for p in m.fill_order)
    with pytest.raises(KeyError, match="no MIG profile"):
        m.profile("3g.20gb")


def test_masks() -> None:
    p = CAT.model("A100-80GB").profile("3g.40gb")
    assert p.mask(4) == 0b11110000
    assert p.mask(0) == 0b00001111


# ------------------------------------------------------------------ product labels


@pytest.mark.parametrize(
    ("label", "model"),
    [
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-80GB-PCIe", "A100-80GB"),
        ("nvidia-a100-sxm4-80gb", "A100-80GB"),
        ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "A100-80GB"),
        ("NVIDIA-A100-SXM4-80GB-SHARED", "A100-80GB"),
        ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb-SHARED", "A100-80GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100-40GB"),
        ("A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA-A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA-H100-NVL", "H100-NVL-94GB"),
        ("NVIDIA-H200", "H200-141GB"),
        ("NVIDIA-H200-NVL", "H200-141GB"),
        ("NVIDIA-B200", "B200-180GB"),
        ("NVIDIA-A30", "A30-24GB"),
        ("NVIDIA-A30-MIG-1g.6gb", "A30-24GB"),
        ("A100-80GB", "A100-80GB"),  # a catalog model name also matches
    ],
)
def test_product_label_matching(label: str, model: str) -> None:
    found = CAT.model_for_product(label)
    assert found is not None and found.name == model


@pytest.mark.parametrize("label", ["NVIDIA-T4", "Tesla-V100-SXM2-16GB", "", "NVIDIA-A100"])
def test_unknown_products(label: str) -> None:
    assert CAT.model_for_product(label) is None


def test_normalize_product() -> None:
    assert normalize_product("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb") == "NVIDIA-H100-80GB-HBM3"
    assert normalize_product("NVIDIA-A30-SHARED") == "NVIDIA-A30"
    assert normalize_product("NVIDIA-A30") == "NVIDIA-A30"


# ------------------------------------------------------------------ resources and spelling


def test_me_profile_uses_base_resource() -> None:
    m = CAT.model("A100-80GB")
    assert m.profile("1g.10gb+me").resource == "nvidia.com/mig-1g.10gb"
    assert m.profile("1g.10gb").resource == "nvidia.com/mig-1g.10gb"
    assert [p.name for p in m.by_resource["nvidia.com/mig-1g.10gb"]] == ["1g.10gb", "1g.10gb+me"]
    assert m.profile_for_resource("nvidia.com/mig-1g.10gb") is m.profile("1g.10gb")
    assert m.profile_for_resource("nvidia.com/mig-1g.10gb+me") is None
    assert m.profile_for_resource("nvidia.com/mig-3g.20gb") is None
    assert "nvidia.com/mig-1g.10gb+me" not in CAT.resources
    assert {"nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.6gb", "nvidia.com/mig-7g.141gb"} <= CAT.resources
    a30 = CAT.model("A30-24GB")
    assert a30.profile_for_resource("nvidia.com/mig-2g.12gb") is a30.profile("2g.12gb")


def test_annotation_spelling_round_trip() -> None:
    assert annotation_spelling("1g.10gb+me") == "1g.10gb_me"
    assert profile_from_annotation("1g.10gb_me") == "1g.10gb+me"
    assert CAT.model("A100-80GB").profile("1g.10gb+me").annotation_name == "1g.10gb_me"
    for m in CAT.models:
        for name in m.profiles:
            assert "+" not in annotation_spelling(name)
            assert profile_from_annotation(annotation_spelling(name)) == name


# ------------------------------------------------------------------ validation of catalog files


def _bundled() -> dict[str, Any]:
    return yaml.safe_load(resources.files("nos.mig").joinpath("data/catalog.yaml").read_text())


def _write(tmp_path: Path, raw: Any) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return path


def _model(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in raw["models"] if m["name"] == name)


def test_bundled_file_loads_from_a_path(tmp_path: Path) -> None:
    cat = load_catalog(_write(tmp_path, _bundled()))
    assert [m.name for m in cat.models] == [m.name for m in CAT.models]
    assert load_catalog(None) is CAT


def _start_beyond_slots(raw: dict[str, Any]) -> None:
    raw["shapes"]["8-slot"]["kinds"]["3g"]["starts"] = [0, 5]


def _max_beyond_placements(raw: dict[str, Any]) -> None:
    raw["shapes"]["8-slot"]["kinds"]["2g"]["max"] = 4


def _duplicate_product(raw: dict[str, Any]) -> None:
    _model(raw, "H100-80GB")["products"].append("nvidia-a100-sxm4-80gb")


def _name_not_matching_kind(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["profiles"]["3g"] = "2g.40gb"


def _media_kind_without_me(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["profiles"]["1g+me"] = "1g.11gb"


def _plain_kind_with_me(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["profiles"]["1g"] = "1g.10gb+gfx"


def _missing_whole_gpu(raw: dict[str, Any]) -> None:
    del _model(raw, "A100-80GB")["profiles"]["7g"]


def _malformed_name(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["profiles"]["1g"] = "1g-10gb"


def _duplicate_profile(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["profiles"]["1g-2m"] = "1g.10gb"


def _unknown_shape(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["shape"] = "9-slot"


def _unknown_kind(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["profiles"]["5g"] = "5g.50gb"


def _too_much_compute(raw: dict[str, Any]) -> None:
    raw["shapes"]["4-slot"]["kinds"]["4g"]["compute"] = 5


def _duplicate_start(raw: dict[str, Any]) -> None:
    raw["shapes"]["8-slot"]["kinds"]["3g"]["starts"] = [0, 0]


def _extra_field(raw: dict[str, Any]) -> None:
    _model(raw, "A100-80GB")["colour"] = "green"


def _negative_start(raw: dict[str, Any]) -> None:
    raw["shapes"]["8-slot"]["kinds"]["1g"]["starts"] = [-1, 0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "breakage",
    [
        _start_beyond_slots,
        _max_beyond_placements,
        _duplicate_product,
        _name_not_matching_kind,
        _media_kind_without_me,
        _plain_kind_with_me,
        _missing_whole_gpu,
        _malformed_name,
        _duplicate_profile,
        _unknown_shape,
        _unknown_kind,
        _too_much_compute,
        _duplicate_start,
        _extra_field,
        _negative_start,
    ],
)
def test_broken_catalog_is_refused(tmp_path: Path, breakage: Any) -> None:
    raw = copy.deepcopy(_bundled())
    breakage(raw)
    with pytest.raises(CatalogError, match="invalid MIG catalog") as err:
        load_catalog(_write(tmp_path, raw))
    assert "\n" not in str(err.value), "the CLI prints the message as one line"


def test_validation_message_names_the_problem(tmp_path: Path) -> None:
    raw = _bundled()
    _name_not_matching_kind(raw)
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, raw))
    assert "model A100-80GB: 2g.40gb does not match kind 3g" in str(err.value)
    raw = _bundled()
    _media_kind_without_me(raw)
    with pytest.raises(CatalogError, match=r"1g\.11gb does not match the variant of kind 1g\+me"):
        load_catalog(_write(tmp_path, raw))


@pytest.mark.parametrize("text", ["shapes: [unclosed", "just a string", "[]"])
def test_unreadable_catalog_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_yaml_error_gives_the_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"is not YAML at line 2: mapping values are not allowed"):
        load_catalog(_write(tmp_path, "shapes: {}\nmodels: a: b\n"))


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")


def test_resource_size_comes_from_the_catalog() -> None:
    # (compute slices, memory GB) of the profile serving a resource: the planner's candidate order
    assert CAT.resource_size("nvidia.com/mig-3g.40gb") == (3, 40)
    assert CAT.resource_size("nvidia.com/mig-1g.24gb-me") == (1, 24), "a -me resource is its own profile"
    assert CAT.resource_size("nvidia.com/mig-9g.99gb") is None, "no model offers it"
    for model in CAT.models:
        for p in model.profiles.values():
            assert CAT.resource_size(p.resource) == (p.compute, p.memory_gb), p.name
