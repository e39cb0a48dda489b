"""Allowed geometries: the optional restriction of each GPU model's layouts.

Same format as the original nos' ``gpuPartitioner.knownMigGeometries`` Helm value::

    - models: [NVIDIA-A100-SXM4-80GB, A100-SXM4-80GB]
      allowedGeometries:
        - {1g.10gb: 7}
        - {3g.40gb: 2}

One meaning everywhere (``nos plan``, ``nos simulate``, the partitioner, the Helm chart): a GPU's
layout is allowed when it *fits within* one of its model's allowed geometries, i.e. has at most the
geometry's count of each profile (variants such as ``1g.10gb+me`` count as their plain profile);
spare slots may stay empty. With the list above a GPU may hold ``1g.10gb x 3`` (within the first
geometry) or one ``3g.40gb`` (within the second), never ``3g.40gb + 1g.10gb``.

The default (``default_known_geometries``, the chart's default ConfigMap) lists every maximal
geometry each known model supports, so it allows every layout the GPU can reach: the same plans as
no restriction at all. Models are product labels (or catalog model names). Entries that cannot
exist on the model (the original's default table has some, e.g. ``3g.20gb`` for an 80GB A100) are
dropped with a warning rather than silently planned with.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nos import yaml_errors
from nos.mig.catalog import Catalog, GpuModel, default_catalog
from nos.mig.packing import Geometry
from nos.mig.placement import enumerate_layouts

Counts = tuple[tuple[str, int], ...]
"""A geometry as a sorted tuple of (profile, count), hashable."""


class GeometryConfigError(ValueError):
    """The known-geometries file cannot be used."""


@cache
def supported_geometries(model: GpuModel) -> tuple[Counts, ...]:
    """Every maximal geometry of plain profiles (no variant such as ``+me``) reachable on an empty
    GPU of ``model``, coarse first. Any layout the GPU can reach fits within one of them."""
    found: set[Counts] = set()
    for layout in enumerate_layouts(model):
        if all(not model.profile(i.profile).variant for i in layout):
            found.add(tuple(sorted(Counter(i.profile for i in layout).items())))
    multisets = [Counter(dict(g)) for g in found]
    maximal = [
        g for g in found if not any(Counter(dict(g)) < other for other in multisets if Counter(dict(g)) != other)
    ]

    def coarse_first(g: Counts) -> tuple[int, ...]:
        sizes = sorted((model.profile(p).slots for p, n in g for _ in range(n)), reverse=True)
        return tuple(-s for s in sizes)

    return tuple(sorted(maximal, key=lambda g: (coarse_first(g), g)))


def default_known_geometries(catalog: Catalog | None = None) -> list[dict[str, Any]]:
    """The default ``knownMigGeometries``: per catalog model, its product labels and every geometry
    it supports (the Helm chart's default ConfigMap is this list)."""
    catalog = catalog or default_catalog()
    return [
        {
            "models": list(model.products),
            "allowedGeometries": [dict(g) for g in supported_geometries(model)],
        }
        for model in catalog.models
    ]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    models: list[str] = Field(min_length=1)
    allowed_geometries: list[dict[str, int]] = Field(alias="allowedGeometries", min_length=1)


def parse_known_geometries(
    text: str, catalog: Catalog | None = None, source: str = "knownMigGeometries"
) -> tuple[dict[str, list[Geometry]], list[str]]:
    """Allowed geometries per catalog model name, and warnings about entries that were dropped."""
    catalog = catalog or default_catalog()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:  # one line: the CLI prints it as is
        raise GeometryConfigError(f"{source}: not YAML{yaml_errors.where(e)}") from e
    if isinstance(raw, dict) and "knownMigGeometries" in raw:
        raw = raw["knownMigGeometries"]
    if not isinstance(raw, list):
        raise GeometryConfigError(f"{source}: expected a list of {{models, allowedGeometries}} entries")
    warnings: list[str] = []
    result: dict[str, list[Geometry]] = {}
    mentioned: set[str] = set()
    for n, item in enumerate(raw):
        try:
            entry = _Entry.model_validate(item)
        except ValidationError as e:
            raise GeometryConfigError(f"{source}: entry {n}: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}") from e
        for label in entry.models:
            model = catalog.model_for_product(label)
            if model is None:
                warnings.append(f"{source}: entry {n}: unknown GPU model {label!r} ignored")
                continue
            mentioned.add(model.name)
            reachable = {frozenset(Counter(i.profile for i in lay).items()) for lay in enumerate_layouts(model)}
            for geometry in entry.allowed_geometries:
                shown = ", ".join(f"{k}: {v}" for k, v in geometry.items())
                unknown = [p for p in geometry if p not in model.profiles]
                if unknown:
                    warnings.append(f"{source}: {label}: geometry {{{shown}}} dropped: no profile {unknown[0]}")
                elif any(v < 0 for v in geometry.values()):
                    warnings.append(f"{source}: {label}: geometry {{{shown}}} dropped: negative count")
                elif frozenset((k, v) for k, v in geometry.items() if v) not in reachable:
                    warnings.append(f"{source}: {label}: geometry {{{shown}}} dropped: not placeable")
                else:
                    g = {k: v for k, v in geometry.items() if v}
                    if g not in result.setdefault(model.name, []):
                        result[model.name].append(g)
    for name in sorted(mentioned - set(result)):
        warnings.append(f"{source}: no usable geometry for {name}: its GPUs are not restricted")
    return result, warnings


def load_known_geometries(path: Path, catalog: Catalog | None = None) -> tuple[dict[str, list[Geometry]], list[str]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise GeometryConfigError(f"cannot read {path}: {e.strerror}") from e
    return parse_known_geometries(text, catalog, source=str(path))
