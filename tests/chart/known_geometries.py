"""The chart's default ``gpuPartitioner.knownMigGeometries``, generated from the MIG catalog.

Layouts are written per profile *kind* (``1g``, ``3g``, ...) and named through each model's own
profile table, so the chart can never drift from the catalog's profile names. Regenerate the block
in ``helm-charts/nos/values.yaml`` with ``.venv/bin/python -m tests.chart.known_geometries``.
"""

from __future__ import annotations

from typing import Any

import yaml

from nos.mig.catalog import Catalog, default_catalog

MODELS = ("A30-24GB", "A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB")

_LAYOUTS_BY_SLOTS: dict[int, list[dict[str, int]]] = {
    # 8 memory slots, 7 compute slices (A100, H100, H200): whole GPU, halves, mixes, all small.
    8: [
        {"7g": 1},
        {"4g": 1, "3g": 1},
        {"3g": 2},
        {"3g": 1, "2g": 2},
        {"3g": 1, "2g": 1, "1g": 2},
        {"3g": 1, "1g": 4},
        {"4g": 1, "2g": 1, "1g": 1},
        {"2g": 3, "1g": 1},
        {"2g": 2, "1g": 3},
        {"1g": 7},
    ],
    # 4 memory slots, 4 compute slices (A30).
    4: [
        {"4g": 1},
        {"2g": 2},
        {"2g": 1, "1g": 2},
        {"1g": 4},
    ],
}


def default_known_geometries(catalog: Catalog | None = None) -> list[dict[str, Any]]:
    catalog = catalog or default_catalog()
    out: list[dict[str, Any]] = []
    for name in MODELS:
        model = catalog.model(name)
        kinds = {p.kind: p.name for p in model.profiles.values()}
        layouts = _LAYOUTS_BY_SLOTS[model.memory_slots]
        out.append(
            {
                "models": list(model.products),
                "allowedGeometries": [{kinds[k]: n for k, n in layout.items()} for layout in layouts],
            }
        )
    return out


if __name__ == "__main__":
    print(yaml.safe_dump({"knownMigGeometries": default_known_geometries()}, sort_keys=False, width=120))
