"""Optional restriction of each GPU model to a list of allowed layouts.

Same format as the original nos' ``gpuPartitioner.knownMigGeometries`` Helm value::

    - models: [NVIDIA-A100-SXM4-80GB, A100-SXM4-80GB]
      allowedGeometries:
        - {1g.10gb: 7}
        - {3g.40gb: 2}

Models are product labels (or catalog model names). Entries that cannot exist on the model (the
original's default table has some, e.g. ``3g.20gb`` for an 80GB A100) are dropped with a warning
rather than silently planned with.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nos import yaml_errors
from nos.mig.catalog import Catalog, default_catalog
from nos.mig.layout import enumerate_layouts
from nos.mig.packing import Geometry


class GeometryConfigError(ValueError):
    """The known-geometries file cannot be used."""


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
