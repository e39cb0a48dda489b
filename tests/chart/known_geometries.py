"""The chart's default known geometries (``helm-charts/nos/files/known-mig-geometries.yaml``),
generated from the MIG catalog: per model its product labels and every geometry it supports
(``nos.mig.geometries.default_known_geometries``, the default of ``nos plan`` and the partitioner).

Regenerate the file with ``.venv/bin/python -m tests.chart.known_geometries`` when the catalog changes.
"""

from __future__ import annotations

from pathlib import Path

from nos.mig.catalog import Catalog
from nos.mig.geometries import default_known_geometries

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "helm-charts" / "nos" / "files" / "known-mig-geometries.yaml"


def render_default(catalog: Catalog | None = None) -> str:
    """One geometry per line (flow style), so the file stays readable and diffs stay small."""
    lines = [
        "# Generated from src/nos/mig/data/catalog.yaml by `python -m tests.chart.known_geometries`: every",
        "# geometry each known GPU model supports. A GPU's layout must fit within one of its model's",
        "# geometries (spare slots may stay empty), so this default restricts nothing; it is what the",
        "# chart mounts when neither gpuPartitioner.knownMigGeometries nor",
        "# nos-gpu-partitioner.knownMigGeometries is set.",
    ]
    for entry in default_known_geometries(catalog):
        lines.append(f"- models: [{', '.join(entry['models'])}]")
        lines.append("  allowedGeometries:")
        for g in entry["allowedGeometries"]:
            lines.append("    - {" + ", ".join(f"{p}: {n}" for p, n in g.items()) + "}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DEFAULT_FILE.parent.mkdir(exist_ok=True)
    DEFAULT_FILE.write_text(render_default())
    print(f"wrote {DEFAULT_FILE}")
