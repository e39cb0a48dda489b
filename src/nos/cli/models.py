"""``nos models``: the GPU models and MIG profiles nos knows (its bundled catalog)."""

from __future__ import annotations

import click

from nos.mig.catalog import Catalog, default_catalog


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
        "| model | profile | annotation spelling | resource | NVML profile | compute | slots | starts | max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in catalog.models:
        for p in m.profiles.values():
            starts = ",".join(map(str, p.starts))
            cells = (m.name, p.name, p.annotation_name, f"`{p.resource}`", p.nvml_profile, p.compute)
            lines.append("| " + " | ".join(map(str, (*cells, p.slots, starts, p.max_count))) + " |")
    return "\n".join(lines)


@click.command()
def models() -> None:
    """List the MIG-capable GPU models and their profiles (markdown)."""
    click.echo(render_models(default_catalog()))
