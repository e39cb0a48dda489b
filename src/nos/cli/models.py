"""``nos models``: the GPU models and MIG profiles nos knows (its bundled catalog)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from nos.cli.errors import Command
from nos.mig.catalog import Catalog, GpuModel, Profile, default_catalog


def _nvml_starts(model: GpuModel, profile: Profile) -> tuple[list[int], int]:
    starts = [model.nvml_placement(profile, s)[0] for s in profile.starts]
    return starts, profile.slots * model.nvml_grid


def render_models(catalog: Catalog) -> str:
    """Markdown tables: one row per model, then one per profile (docs/mig-models.md is this output)."""
    lines = [
        "| model | memory slots | compute slices | product labels | verified |",
        "|---|---|---|---|---|",
    ]
    for m in catalog.models:
        products = ", ".join(f"`{p}`" for p in m.products)
        verified = "yes" if m.verified else "no (names from public tables)"
        lines.append(f"| {m.name} | {m.memory_slots} | {m.compute_slices} | {products} | {verified} |")
    lines += [
        "",
        "| model | profile | annotation spelling | resource | NVML profile | compute | slots | starts"
        " | NVML placements (size) | max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in catalog.models:
        for p in m.profiles.values():
            starts = ",".join(map(str, p.starts))
            nvml_starts, size = _nvml_starts(m, p)
            nvml = f"{','.join(map(str, nvml_starts))} ({size})"
            cells = (m.name, p.name, p.annotation_name, f"`{p.resource}`", p.nvml_profile, p.compute)
            lines.append("| " + " | ".join(map(str, (*cells, p.slots, starts, nvml, p.max_count))) + " |")
    return "\n".join(lines)


def models_json(catalog: Catalog) -> list[dict[str, Any]]:
    """Per model and profile: what pods ask for, where NVML places instances, how many fit, and
    whether the model's table was checked against a driver."""
    out = []
    for m in catalog.models:
        profiles = []
        for p in m.profiles.values():
            nvml_starts, size = _nvml_starts(m, p)
            profiles.append(
                {
                    "name": p.name,
                    "annotationName": p.annotation_name,
                    "resource": p.resource,
                    "nvmlProfile": p.nvml_profile,
                    "compute": p.compute,
                    "memoryGb": p.memory_gb,
                    "slots": p.slots,
                    "starts": list(p.starts),
                    "nvmlPlacement": {"starts": nvml_starts, "size": size},
                    "maxCount": p.max_count,
                }
            )
        out.append(
            {
                "name": m.name,
                "products": list(m.products),
                "memorySlots": m.memory_slots,
                "computeSlices": m.compute_slices,
                "memoryGb": m.memory_gb,
                "nvmlGrid": m.nvml_grid,
                "verified": m.verified,
                "profiles": profiles,
            }
        )
    return out


def _columns(rows: Sequence[tuple[str, ...]], indent: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_text(catalog: Catalog) -> str:
    """One block per model, sized for a terminal."""
    lines: list[str] = []
    for m in catalog.models:
        verified = "verified" if m.verified else "NOT verified against a driver"
        lines.append(f"{m.name}: {m.memory_slots} memory slots, {m.compute_slices} compute slices, {verified}")
        lines.append(f"  products: {', '.join(m.products)}")
        rows = [("profile", "resource", "compute", "slots", "starts", "NVML placements", "max")]
        for p in m.profiles.values():
            nvml_starts, size = _nvml_starts(m, p)
            rows.append(
                (
                    p.name,
                    p.resource,
                    str(p.compute),
                    str(p.slots),
                    ",".join(map(str, p.starts)),
                    f"{','.join(map(str, nvml_starts))} size {size}",
                    str(p.max_count),
                )
            )
        lines += _columns(rows, "  ")
        lines.append("")
    return "\n".join(lines).rstrip()


@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: models, profiles, NVML placements.")
@click.option("--markdown", is_flag=True, help="Markdown tables (docs/mig-models.md is this output).")
def models(as_json: bool, markdown: bool) -> None:
    """List the MIG-capable GPU models and their profiles."""
    catalog = default_catalog()
    if as_json:
        click.echo(json.dumps(models_json(catalog), indent=2))
    elif markdown:
        click.echo(render_models(catalog))
    else:
        click.echo(render_text(catalog))
