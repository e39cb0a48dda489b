"""The MIG catalog: GPU models, their memory-slot geometry and GPU-instance profiles.

The catalog ships as ``data/catalog.yaml`` and is validated when loaded, so a typo in a start slot
or a profile name fails loudly at start instead of producing a plan a GPU cannot reach.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nos import yaml_errors

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
_PROFILE_NAME = re.compile(r"^(?P<compute>\d+)g\.(?P<memory>\d+)gb(?P<variant>\+[a-z][a-z.]*|-me)?$")
_KIND_VARIANT = re.compile(r"(\+[a-z][a-z.]*|-me)$")
"""Variants: ``+me`` (owns the media engines), ``+me.all`` (all of them), ``+gfx`` (graphics), ``-me``
(no media engines at all); the kind name carries the same suffix (``1g-2m`` is a kind, not a variant)."""
_GFD_SUFFIXES = (re.compile(r"-MIG-.*$"), re.compile(r"-SHARED$"))


class CatalogError(ValueError):
    """The catalog file is malformed."""


def slot_mask(start: int, size: int) -> int:
    """Bitmask of the memory slots an instance of ``size`` slots started at ``start`` occupies: the
    one definition every placement rule, search and agent operation builds on."""
    return ((1 << size) - 1) << start


@dataclass(frozen=True, slots=True, eq=False)
class Profile:
    """A GPU-instance profile of one GPU model, e.g. ``1g.10gb`` on an A100-80GB.

    Instances are compared by identity: each profile object is a singleton of its model.
    """

    name: str
    """Spelling of NVML and the device plugin, e.g. ``1g.10gb+me``."""
    kind: str
    nvml_profile: int
    """The NVML_GPU_INSTANCE_PROFILE_* constant (not the driver's profile id)."""
    compute: int
    slots: int
    starts: tuple[int, ...]
    max_count: int
    memory_gb: int

    @property
    def media(self) -> bool:
        """Owns the media engines (``+me``, ``+me.all``); a GPU has one set of them."""
        return "+me" in self.name

    @property
    def variant(self) -> str:
        """The suffix of a variant profile (``+me``, ``+gfx``, ``-me``, ...); empty for a plain one."""
        match = _KIND_VARIANT.search(self.name)
        return match[1] if match else ""

    @property
    def base(self) -> str:
        """The plain profile this one is a variant of (itself when plain)."""
        return self.name[: len(self.name) - len(self.variant)]

    @property
    def annotation_name(self) -> str:
        return annotation_spelling(self.name)

    @property
    def resource(self) -> str:
        """Extended resource the device plugin (mixed strategy) advertises this profile under.

        The plugin advertises a ``+me`` instance under its base profile's resource (device-plugin
        issue #1462), so a pod asking ``nvidia.com/mig-1g.10gb`` can run on a ``1g.10gb+me``.
        """
        return resource_for(self.name)

    def mask(self, start: int) -> int:
        """Bitmask of the memory slots an instance started at ``start`` occupies."""
        return slot_mask(start, self.slots)

    def __repr__(self) -> str:
        return f"Profile({self.name})"


@dataclass(frozen=True, eq=False)
class GpuModel:
    """One MIG-capable GPU model."""

    name: str
    memory_slots: int
    compute_slices: int
    memory_gb: int
    products: tuple[str, ...]
    profiles: dict[str, Profile] = field(repr=False)
    """By NVML name, smallest first."""
    verified: bool = True
    nvml_grid: int = 1
    """NVML placement units per catalog memory slot: NVML reports (and takes) placements on a finer
    grid on some models (RTX PRO 6000 Blackwell: 3, a 12-unit grid over its 4 slots)."""

    def nvml_placement(self, profile: Profile, start: int) -> tuple[int, int]:
        """(start, size) of an instance as NVML's ``nvmlGpuInstancePlacement_t`` gives them."""
        return start * self.nvml_grid, profile.slots * self.nvml_grid

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise KeyError(f"GPU model {self.name} has no MIG profile {name!r}") from None

    @cached_property
    def full_mask(self) -> int:
        """Bitmask of every memory slot of the GPU."""
        return slot_mask(0, self.memory_slots)

    @cached_property
    def full_profile(self) -> Profile:
        """The profile covering the whole GPU: the contract's initial layout."""
        return next(p for p in self.profiles.values() if p.slots == self.memory_slots and not p.variant)

    @cached_property
    def by_resource(self) -> dict[str, tuple[Profile, ...]]:
        """Profiles that serve each extended resource; the plain (non-``+me``) profile first."""
        out: dict[str, list[Profile]] = {}
        for p in self.profiles.values():
            out.setdefault(p.resource, []).append(p)
        return {r: tuple(sorted(ps, key=lambda p: p.media)) for r, ps in out.items()}

    def profile_for_resource(self, resource: str) -> Profile | None:
        """The profile nos creates for a pod requesting ``resource`` (never a ``+me`` one)."""
        ps = self.by_resource.get(resource)
        return ps[0] if ps and not ps[0].media else None

    @cached_property
    def fill_order(self) -> tuple[Profile, ...]:
        """Profiles to fill spare space with, largest first (never a variant such as ``+me``)."""
        ps = [p for p in self.profiles.values() if not p.variant]
        return tuple(sorted(ps, key=lambda p: (-p.slots, -p.compute, p.name)))


def resource_for(profile: str) -> str:
    """The extended resource a profile's instances are advertised under (``+me`` under its base)."""
    return MIG_RESOURCE_PREFIX + profile.split("+", 1)[0]


def annotation_spelling(profile: str) -> str:
    """Profile name as written in annotation keys: ``+`` is not allowed there, ``_`` is.

    NVIDIA profile names never contain ``_`` (``-me`` is taken by Blackwell's no-media profiles),
    so the mapping is reversible.
    """
    return profile.replace("+", "_")


def profile_from_annotation(spelling: str) -> str:
    return spelling.replace("_", "+")


def normalize_product(label: str) -> str:
    """Strip the suffixes GPU feature discovery appends to ``nvidia.com/gpu.product``."""
    for suffix in _GFD_SUFFIXES:
        label = suffix.sub("", label)
    return label


@dataclass(frozen=True)
class Catalog:
    models: tuple[GpuModel, ...]

    @cached_property
    def _by_product(self) -> dict[str, GpuModel]:
        return {p.lower(): m for m in self.models for p in m.products}

    @cached_property
    def _by_name(self) -> dict[str, GpuModel]:
        return {m.name: m for m in self.models}

    def model(self, name: str) -> GpuModel:
        return self._by_name[name]

    def model_for_product(self, label: str) -> GpuModel | None:
        """The model a ``nvidia.com/gpu.product`` label names, or None if it is not MIG-capable
        or unknown. Matching ignores case and GFD suffixes; a catalog model name also matches."""
        key = normalize_product(label).lower()
        return self._by_product.get(key) or self._by_name.get(normalize_product(label))

    @cached_property
    def resources(self) -> frozenset[str]:
        """Every MIG extended resource some model offers."""
        return frozenset(r for m in self.models for r in m.by_resource)

    @cached_property
    def _sizes(self) -> dict[str, tuple[int, int]]:
        return {p.resource: (p.compute, p.memory_gb) for m in self.models for p in m.profiles.values()}

    def resource_size(self, resource: str) -> tuple[int, int] | None:
        """(compute slices, memory GB) of the profile a MIG resource serves, None when no model
        offers it. The same on every model offering it: both are in the profile's name, which the
        catalog checks on load."""
        return self._sizes.get(resource)


# --------------------------------------------------------------------------- file schema


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nvml_profile: int = Field(ge=0)
    compute: int = Field(ge=1)
    slots: int = Field(ge=1)
    starts: list[int] = Field(min_length=1)
    max: int = Field(ge=1)


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memory_slots: int = Field(ge=1, le=64)
    compute_slices: int = Field(ge=1)
    kinds: dict[str, _Kind]

    @model_validator(mode="after")
    def _check(self) -> _Shape:
        for name, k in self.kinds.items():
            if k.compute > self.compute_slices:
                raise ValueError(f"kind {name}: {k.compute} compute slices > {self.compute_slices}")
            for s in k.starts:
                if s < 0 or s + k.slots > self.memory_slots:
                    raise ValueError(f"kind {name}: start {s} + size {k.slots} leaves the GPU")
            if len(set(k.starts)) != len(k.starts):
                raise ValueError(f"kind {name}: duplicate start slots")
            if k.max > len(k.starts):
                raise ValueError(f"kind {name}: max {k.max} > {len(k.starts)} placements")
        return self


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: str
    memory_gb: int = Field(ge=1)
    products: list[str] = Field(min_length=1)
    profiles: dict[str, str]
    verified: bool = True
    nvml_grid: int = Field(default=1, ge=1, le=16)


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shapes: dict[str, _Shape]
    models: list[_Model]

    @model_validator(mode="after")
    def _check(self) -> _CatalogFile:
        seen_products: dict[str, str] = {}
        for m in self.models:
            shape = self.shapes.get(m.shape)
            if shape is None:
                raise ValueError(f"model {m.name}: unknown shape {m.shape!r}")
            unknown = set(m.profiles) - set(shape.kinds)
            if unknown:
                raise ValueError(f"model {m.name}: kinds {sorted(unknown)} not in shape {m.shape}")
            names = list(m.profiles.values())
            if len(set(names)) != len(names):
                raise ValueError(f"model {m.name}: duplicate profile names")
            for kind, pname in m.profiles.items():
                match = _PROFILE_NAME.match(pname)
                if match is None:
                    raise ValueError(f"model {m.name}: malformed profile name {pname!r}")
                if int(match["compute"]) != shape.kinds[kind].compute:
                    raise ValueError(f"model {m.name}: {pname} does not match kind {kind}")
                kind_variant = _KIND_VARIANT.search(kind)
                if (match["variant"] or "") != (kind_variant[1] if kind_variant else ""):
                    raise ValueError(f"model {m.name}: {pname} does not match the variant of kind {kind}")
            full = [
                k
                for k in m.profiles
                if shape.kinds[k].slots == shape.memory_slots and not _KIND_VARIANT.search(m.profiles[k])
            ]
            if len(full) != 1:
                raise ValueError(f"model {m.name}: needs exactly one plain whole-GPU profile")
            for p in m.products:
                if p.lower() in seen_products:
                    raise ValueError(f"product {p} listed by {seen_products[p.lower()]} and {m.name}")
                seen_products[p.lower()] = m.name
        return self


def _build(raw: object) -> Catalog:
    try:
        parsed = _CatalogFile.model_validate(raw)
    except ValidationError as e:  # one line: the CLI prints it as is
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise CatalogError(f"invalid MIG catalog: {first['msg']}{f' at {where}' if where else ''}{more}") from e
    models = []
    for m in parsed.models:
        shape = parsed.shapes[m.shape]
        profiles = []
        for kind, pname in m.profiles.items():
            k = shape.kinds[kind]
            mem = int(_PROFILE_NAME.match(pname)["memory"])  # type: ignore[index]
            profiles.append(
                Profile(pname, kind, k.nvml_profile, k.compute, k.slots, tuple(sorted(k.starts)), k.max, mem)
            )
        profiles.sort(key=lambda p: (p.slots, p.compute, p.media, p.name))
        models.append(
            GpuModel(
                name=m.name,
                memory_slots=shape.memory_slots,
                compute_slices=shape.compute_slices,
                memory_gb=m.memory_gb,
                products=tuple(m.products),
                profiles={p.name: p for p in profiles},
                verified=m.verified,
                nvml_grid=m.nvml_grid,
            )
        )
    return Catalog(tuple(models))


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate a catalog file (the bundled one by default)."""
    if path is None:
        return default_catalog()
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise CatalogError(f"cannot read MIG catalog {path}: {e.strerror}") from e
    except yaml.YAMLError as e:  # one line: the CLI prints it as is
        raise CatalogError(f"MIG catalog {path} is not YAML{yaml_errors.where(e)}") from e
    return _build(raw)


@cache
def default_catalog() -> Catalog:
    text = resources.files("nos.mig").joinpath("data/catalog.yaml").read_text()
    return _build(yaml.safe_load(text))
