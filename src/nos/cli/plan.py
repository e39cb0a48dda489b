"""``nos plan SNAPSHOT``: what the partitioner would do on a cluster snapshot, offline."""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from nos.cli.errors import BadInput, CliError, Command
from nos.cli.options import geometries_option, mix_callback
from nos.config import PROFILE_SHARES
from nos.kube.views.snapshot import SnapshotError, load_snapshot
from nos.mig.catalog import CatalogError, load_catalog
from nos.mig.geometries import GeometryConfigError, load_known_geometries
from nos.mig.layout import Instance
from nos.planner.checker import isolate_failures
from nos.planner.cluster import build_cluster
from nos.planner.ignored import Ignored, not_considered
from nos.planner.plan import Plan
from nos.planner.planner import DEFAULT_BUDGET_S, plan_state
from nos.planner.shares import expected, unknown_profiles


def _layout(instances: tuple[Instance, ...]) -> str:
    return " ".join(str(i) for i in instances) or "(empty)"


def render_text(plan: Plan, ignored: list[Ignored] | None = None, mix: bool = False) -> str:
    """The human-readable plan: per node and GPU, current -> planned and the pods placed."""
    by_gpu: dict[tuple[str, int], list[str]] = {}
    for p in plan.placed:
        for d in p.devices:
            by_gpu.setdefault((p.node, d.gpu), []).append(f"{p.pod} ({d.profile}{', existing' if d.existing else ''})")
    held: dict[tuple[str, int], list[str]] = {}
    for h in plan.held:
        held.setdefault((h.node, h.gpu), []).append(f"{h.profile}{' (existing)' if h.existing else ''}")
    candidates = len(plan.placed) + len(plan.unplaced)
    lines = [
        f"Plan {plan.plan_id}: {len(plan.placed)} of {candidates} candidate pod(s) placed, "
        f"{len(plan.changed_nodes)} node(s) reconfigured, "
        f"{sum(n.write for n in plan.nodes.values())} node(s) to annotate",
        f"Search: {_search(plan)}",
        "",
    ]
    for name, node in sorted(plan.nodes.items()):
        model = node.gpus[0].model if node.gpus else "?"
        state = f"frozen: {node.frozen}" if node.frozen else "reconfigure" if node.changed else "unchanged"
        lines.append(f"node {name} ({model}) [{state}]")
        for g in node.gpus:
            arrow = f"{_layout(g.current)} -> {_layout(g.planned)}" if g.changed else f"{_layout(g.current)} (kept)"
            lines.append(f"  GPU {g.index}: {arrow}{f'  [frozen: {g.frozen}]' if g.frozen else ''}")
            pods = by_gpu.get((name, g.index))
            if pods:
                lines.append(f"         + {', '.join(pods)}")
            if (name, g.index) in held:
                lines.append(f"         held for its profile's share: {', '.join(held[(name, g.index)])}")
    if plan.unplaced:
        lines += ["", f"Left pending ({len(plan.unplaced)}):"]
        lines += [f"  {u.pod}: {u.reason}" for u in plan.unplaced]
    lacking = [s for s in plan.shares if s.kept or s.wanted]
    if lacking:
        basis = "the expected mix (--mix); every hold below every pod" if mix else "the demand"
        lines += ["", f"Profiles below their share of {basis} (devices: in use + pending -> share; held):"]
        where = "" if mix else " below every pod"
        lines += [
            f"  {s.profile}: {s.have} -> {s.target}; {s.kept} free kept, {s.wanted} more asked{where}" for s in lacking
        ]
    if plan.problems:
        lines += ["", f"Problems ({len(plan.problems)}):"]
        lines += [f"  {p}" for p in plan.problems]
    if ignored:
        lines += ["", f"Not considered ({len(ignored)}):"]
        lines += [f"  {i.what}: {i.reason}" for i in ignored]
    lines += ["", "(* = in use; PROFILE@SLOT = instance starting at that memory slot)"]
    return "\n".join(lines)


def json_lines(doc: Mapping[str, Any]) -> str:
    """``doc`` as JSON, one line per top-level key and per entry of a top-level list or mapping
    (a node, a placed pod): readable and greppable, and written by the standard library's C
    encoder, which ``indent`` turns off (measured on a 1,000-node plan: 1.0 s indented, 0.2 s so)."""
    parts = []
    for key, value in doc.items():
        name = json.dumps(key)
        if isinstance(value, dict) and value:
            entries = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            parts.append(f"  {name}: {{\n{entries}\n  }}")
        elif isinstance(value, list) and value:
            entries = ",\n".join(f"    {json.dumps(v)}" for v in value)
            parts.append(f"  {name}: [\n{entries}\n  ]")
        else:
            parts.append(f"  {name}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}"


def _search(plan: Plan) -> str:
    """How the plan was found, in one phrase."""
    if plan.search is None:
        return "unknown"
    what = "optimizing stage" if plan.search.stage == "optimized" else "greedy passes"
    proven = "proven optimal" if plan.search.optimal else "not proven optimal"
    return f"{what}, {proven}" + (f" ({plan.search.note})" if plan.search.note else "")


@click.command(cls=Command)
@click.argument("snapshot", metavar="SNAPSHOT")
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable plan (see docs/plan-format.md).")
@geometries_option
@click.option(
    "--catalog",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Alternative MIG catalog YAML (format: the bundled one).",
)
@click.option("--plan-id", help="Plan id to write (default: a digest of the plan).")
@click.option("--fill", is_flag=True, help="Fill spare slots of reconfigured GPUs with the largest instances.")
@click.option(
    "--shares",
    type=click.FloatRange(0, 1),
    default=PROFILE_SHARES,
    show_default=True,
    help="Hold capacity for each MIG profile up to this fraction of its share of the demand; 0: off.",
)
@click.option(
    "--mix",
    default=None,
    metavar="PROFILE=WEIGHT,...",
    callback=mix_callback,
    help='The profile mix you expect, e.g. "7g.80gb=6,4g.40gb=1": with --shares, shares follow it instead of '
    "the measured demand, and only capacity no pending pod wants is held.",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BUDGET_S,
    show_default=True,
    help="Seconds planning may take (greedy passes, then the optimizing stage).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Report each stage and its time on standard error (default: when it is a terminal).",
)
def plan(
    snapshot: str,
    as_json: bool,
    geometries: Path | None,
    catalog: Path | None,
    plan_id: str | None,
    fill: bool,
    shares: float,
    mix: dict[str, float] | None,
    budget: float,
    progress: bool | None,
) -> None:
    """Plan MIG layouts for SNAPSHOT, offline.

    SNAPSHOT is what `kubectl get nodes,pods -A -o yaml` prints, a multi-document YAML of Nodes and
    Pods, or - for standard input. Nothing is written to any cluster.
    """
    show = sys.stderr.isatty() if progress is None else progress
    clock = time.perf_counter()

    def step(message: str) -> None:
        nonlocal clock
        if show:
            click.echo(f"nos plan: {message} ({time.perf_counter() - clock:.2f} s)", err=True)
        clock = time.perf_counter()

    try:
        cat = load_catalog(catalog)
        allowed = None
        if geometries is not None:
            allowed, warnings = load_known_geometries(geometries, cat)
            for w in warnings:
                click.echo(f"warning: {w}", err=True)
        if show:
            click.echo(f"nos plan: reading {snapshot} ...", err=True)
        snap = load_snapshot(snapshot)
    except (SnapshotError, CatalogError, GeometryConfigError) as e:
        raise BadInput(str(e)) from e
    unknown_mix = unknown_profiles(cat, mix or {})
    if unknown_mix:
        raise BadInput(f"--mix: no GPU model offers {', '.join(unknown_mix)} (nos models lists the profiles)")
    if mix and not shares:
        click.echo("warning: --mix has no effect with --shares 0 (no capacity is held)", err=True)
    step(f"read {len(snap.nodes)} node(s) and {len(snap.pods)} pod(s)")
    state = build_cluster(snap.nodes, snap.pods, cat)
    ignored = not_considered(snap.nodes, snap.pods)
    del snap  # the raw objects: the cluster state holds what planning needs
    gc.freeze()  # the state lives to the end: later collections need not walk it again
    step(f"cluster: {len(state.nodes)} managed node(s), {len(state.candidates)} candidate pod(s); planning ...")
    unknown = [n.frozen for n in state.nodes.values() if n.model is None and n.frozen]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise BadInput(f"{unknown[0]}{more}; supported models: nos models")
    if not state.nodes:
        click.echo(
            "warning: no node is labelled nos.nebuly.ai/gpu-partitioning=mig (or nos.nebuly.com/...); nothing to plan",
            err=True,
        )
    result = plan_state(
        state, geometries=allowed, plan_id=plan_id, fill=fill, budget=budget, share_weight=shares, share_mix=mix
    )
    step(f"planned: {len(result.placed)} placed, {_search(result)}")
    errors = isolate_failures(state, result)  # a node whose part fails is left out, under Problems
    if errors:  # a planner bug: never print a plan that fails the independent check
        raise CliError(f"internal error, the plan failed its check: {errors[0]}")
    step("checked")
    if as_json:
        doc = result.to_json()
        doc["notConsidered"] = [{"object": i.what, "reason": i.reason} for i in ignored]
        click.echo(json_lines(doc))
    else:
        click.echo(render_text(result, ignored, mix=bool(expected(mix))))
