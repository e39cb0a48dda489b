"""``nos simulate``: replay a workload on a simulated cluster with the real partitioner and agent
(wiring only; the simulator lives in ``nos.sim``)."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nos.cli.errors import BadInput, CliError, Command
from nos.cli.options import parse_mix
from nos.config import PROFILE_SHARES
from nos.mig.catalog import GpuModel, default_catalog
from nos.sim.invariants import InvariantViolation
from nos.sim.load import nodes_for_load, offered_load, parse_load
from nos.sim.metrics import PolicyResult
from nos.sim.progress import LineProgress
from nos.sim.report import plot, summary_table, to_json
from nos.sim.runner import run_end, simulate_policy
from nos.sim.scenario import (
    DEFAULT_POLICIES,
    POLICIES,
    NodeGroup,
    PodSpec,
    Scenario,
    ScenarioError,
    Workload,
    default_scenario,
    load_scenario,
    one_line,
    parse_layout,
)
from nos.sim.static_mix import known_mix, mix_shares
from nos.sim.trace import DEFAULT_SAMPLE, SHIPPED_TRACE, TraceError, read_trace, shipped_trace, trace_mix, trace_pods

KNOWN_MIX, NO_MIX = "known", "none"
"""``--mix known``: nos' shares follow the mix best-static is configured for; ``none``: the measured demand."""
DEFAULT_MAX_RUN = "6h"
"""Trace tasks' run times are cut here: the trace's tasks that run for days are long-lived services;
under compressed arrivals they would pile up and fill any cluster, and the replay would measure that
pile-up instead of partitioning."""
SHIPPED = "shipped"
"""``--trace`` without a file: the trace shipped as package data."""
AUTO_ARRIVAL_SPAN_S = 4 * 3600
"""``--time-scale auto`` compresses the sampled trace's arrivals into this span."""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


def _seconds(text: str, option: str = "--duration") -> float:
    m = _DURATION.match(text.strip())
    if m is None or not float(m[1]) > 0:
        raise click.BadParameter(f"{text!r} is not a positive duration such as 3600, 90m or 4h", param_hint=option)
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def _sample(text: str | None, trace: bool) -> int | None:
    """``--sample``: a task count, ``all``, or the default for traces."""
    if text is None:
        return DEFAULT_SAMPLE if trace else None
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{text!r} is not a positive task count or 'all'", param_hint="--sample")
    return int(text)


def _build(
    scenario_file: Path | None,
    trace: str | None,
    sample: int | None,
    nodes: int | None,
    gpus: int | None,
    model: str | None,
    time_scale: str,
    policies: str | None,
    static_layout: str | None,
    seed: int | None,
    duration: str | None,
    load: str | None,
    max_run: str = DEFAULT_MAX_RUN,
    shares: float | None = None,
    mix: str | None = None,
) -> tuple[Scenario, list[PodSpec], dict[str, Any]]:
    scenario = load_scenario(scenario_file) if scenario_file else default_scenario()
    info: dict[str, Any] = {"source": str(scenario_file) if scenario_file else "default"}
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if duration is not None:
        update["duration_s"] = _seconds(duration)
    if policies is not None:
        update["policies"] = [p.strip() for p in policies.split(",") if p.strip()]
    if static_layout is not None:
        update["static_layout"] = parse_layout(static_layout)
    if shares is not None:
        update["profile_shares"] = shares
    if mix is not None and mix != KNOWN_MIX:
        update["profile_mix"] = {} if mix == NO_MIX else parse_mix(mix)
    if trace is not None and scenario_file is None:
        gpus, model = gpus or 8, model or "A100-80GB"
        if nodes is None and load is None:
            load = "busy"
    load_factor = parse_load(load) if load is not None else None
    if load_factor is not None and nodes is not None:
        raise ScenarioError("--load sizes the cluster: give it or --nodes, not both")
    if nodes is not None or gpus is not None or model is not None or load_factor is not None:
        first = scenario.nodes[0]
        update["nodes"] = [
            NodeGroup(
                name="node",
                model=model or first.model,
                count=nodes or sum(g.count for g in scenario.nodes),
                gpus=gpus or first.gpus,
                cpu=first.cpu,
                memory_gib=first.memory_gib,
                # named in the first group's model's profiles: kept only while the model is the same
                initial_layout=first.initial_layout if model in (None, first.model) else None,
            )
        ]
    if trace is not None:
        update["workload"] = Workload()
        update["name"] = "openb trace"
    data = scenario.model_dump()
    data.update({k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in update.items()})
    if "nodes" in update:
        data["nodes"] = [g.model_dump() for g in update["nodes"]]
    scenario = Scenario.model_validate(data)
    models = {g.model for g in scenario.nodes}
    if (trace is not None or load_factor is not None) and len(models) != 1:
        raise ScenarioError("a trace replay or --load needs one GPU model in the cluster (use --model)")
    gpu_model = default_catalog().model(next(iter(models)))
    if trace is None:
        pods = scenario.all_pods()
    else:
        max_run_s = None if max_run in ("none", "") else _seconds(max_run, "--max-run")
        pods, whole = _trace_pods(trace, gpu_model, sample, time_scale, scenario.seed, max_run_s, info)
        if scenario.expected_mix is None:  # best-static knows the trace, not which tasks the sample drew
            scenario = scenario.model_copy(update={"expected_mix": whole})
    group = scenario.nodes[0]
    if load_factor is not None:
        count = nodes_for_load(pods, gpu_model, group.gpus, run_end(scenario, pods), load_factor)
        scenario = scenario.model_copy(update={"nodes": [group.model_copy(update={"count": count})]})
        info["loadRequested"] = load
    if len(models) == 1:
        gpus_total = sum(g.count * g.gpus for g in scenario.nodes)
        info["offeredLoad"] = round(offered_load(pods, gpu_model, gpus_total, run_end(scenario, pods)), 3)
    if mix == KNOWN_MIX:  # what best-static is given: an operator who knows the mix configures nos with it
        scenario = scenario.model_copy(update={"profile_mix": known_mix(scenario, run_end(scenario, pods))})
    return scenario, pods, info


def _trace_pods(
    trace: str,
    model: GpuModel,
    sample: int | None,
    time_scale: str,
    seed: int,
    max_run_s: float | None,
    info: dict[str, Any],
) -> tuple[list[PodSpec], dict[str, float]]:
    """The replayed pods, and the whole trace's profile mix (run time per profile, cut like the
    pods')."""
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(shipped_trace()) if trace == SHIPPED else Path(trace)
        tasks = read_trace(path)
    auto = time_scale == "auto"
    scale = 1.0 if auto else float(time_scale)
    pods = trace_pods(tasks, model, sample, scale, seed, max_run_s)
    if auto:  # the sample's own arrival span, compressed into AUTO_ARRIVAL_SPAN_S
        scale = (max(p.arrival_s for p in pods) or 1.0) / AUTO_ARRIVAL_SPAN_S
        pods = [p.model_copy(update={"arrival_s": round(p.arrival_s / scale, 3)}) for p in pods]
    source = f"shipped sample of the Alibaba openb trace ({SHIPPED_TRACE})" if trace == SHIPPED else str(path)
    info.update({"trace": source, "tasks": len(pods), "timeScale": round(scale, 3), "maxRunSeconds": max_run_s})
    return pods, trace_mix(tasks, model, max_run_s)


@click.command("simulate", cls=Command)
@click.argument("scenario_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trace",
    is_flag=False,
    flag_value=SHIPPED,
    default=None,
    metavar="[CSV]",
    help="Replay an Alibaba openb pod list; without CSV the 7,002 single-GPU tasks shipped with nos "
    "(openb_pod_list_gpushare40, CC BY 4.0).",
)
@click.option(
    "--sample",
    default=None,
    metavar="N|all",
    help=f"Trace: replay N tasks drawn at random (seeded), or all [default: {DEFAULT_SAMPLE}].",
)
@click.option(
    "--load",
    default=None,
    metavar="NAME|X",
    help="Size the cluster so the workload's offered load is X (light=0.5, busy=0.8, overloaded=1.2; "
    "docs/simulate.md) [trace default: busy].",
)
@click.option(
    "--max-run",
    default=DEFAULT_MAX_RUN,
    show_default=True,
    help="Trace: cut task run times to this (e.g. 6h, 90m), or 'none'.",
)
@click.option("--nodes", type=click.IntRange(1), default=None, help="Cluster: N nodes (one group) instead of --load.")
@click.option(
    "--gpus-per-node", "gpus", type=click.IntRange(1, 16), default=None, help="GPUs per node (trace default 8)."
)
@click.option(
    "--model", default=None, help="GPU model of the nodes, e.g. A100-80GB, H100-80GB (trace default A100-80GB)."
)
@click.option(
    "--time-scale",
    default="auto",
    show_default=True,
    help="Trace: divide inter-arrival times by X; 'auto' compresses the sampled arrivals into 4 hours.",
)
@click.option(
    "--policies",
    default=None,
    help=f"Comma-separated subset of {','.join(POLICIES)} [default: {','.join(DEFAULT_POLICIES)}].",
)
@click.option(
    "--static-layout", default=None, help='Layout of every GPU for static, e.g. "1g.10gb=2,2g.20gb=1,3g.40gb=1".'
)
@click.option("--seed", type=int, default=None, help="Seed of generated workloads and trace sampling.")
@click.option(
    "--shares",
    type=click.FloatRange(0, 1),
    default=None,
    help=f"nos: hold capacity for each MIG profile up to this fraction of its share of the demand; 0: off"
    f" [default: the scenario's profile_shares, {PROFILE_SHARES}].",
)
@click.option(
    "--mix",
    default=None,
    metavar="known|none|PROFILE=WEIGHT,...",
    help="nos: the profile mix its shares follow (with --shares above 0); known: the mix best-static is "
    "configured for; none: the measured demand [default: the scenario's profile_mix].",
)
@click.option("--duration", default=None, help="Virtual time to simulate (e.g. 4h, 90m, 3600) [default: until done].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of the table.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG.")
def simulate(
    scenario_file: Path | None,
    trace: str | None,
    sample: str | None,
    nodes: int | None,
    gpus: int | None,
    model: str | None,
    time_scale: str,
    policies: str | None,
    static_layout: str | None,
    seed: int | None,
    shares: float | None,
    mix: str | None,
    duration: str | None,
    as_json: bool,
    plot_file: Path | None,
    load: str | None,
    max_run: str,
) -> None:
    """Replay a workload on a simulated cluster with the real partitioner and MIG agent, once per
    policy (ideal, best-static, whole-gpu, greedy, nos), and compare pending times and GPU allocation."""
    quiet = logging.getLogger("nos")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the production code's per-step logs would drown the progress bars
    click.get_current_context().call_on_close(lambda: quiet.setLevel(level))
    if plot_file is not None:
        try:
            importlib.import_module("matplotlib")
        except ImportError as e:
            raise CliError("--plot needs the 'plot' extra: pip install 'nos[plot]'") from e
        folder = plot_file.resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            message = f"cannot write {plot_file}: {folder} is not a writable folder"
            raise click.BadParameter(message, param_hint="--plot")
    if time_scale != "auto":
        try:
            if float(time_scale) <= 0:
                raise ValueError
        except ValueError:
            raise click.BadParameter("expected a positive number or 'auto'", param_hint="--time-scale") from None
    try:
        scenario, pods, info = _build(
            scenario_file,
            trace,
            _sample(sample, trace is not None),
            nodes,
            gpus,
            model,
            time_scale,
            policies,
            static_layout,
            seed,
            duration,
            load,
            max_run,
            shares,
            mix,
        )
    except ValidationError as e:
        raise BadInput(one_line(e)) from e
    except (ScenarioError, TraceError, ValueError) as e:
        raise BadInput(str(e)) from e
    if not pods:
        raise BadInput("the workload has no pods")
    if scenario.profile_mix and not scenario.profile_shares and "nos" in scenario.policies:
        click.echo("warning: nos' profile mix has no effect with profile shares 0 (--shares)", err=True)
    end = run_end(scenario, pods)
    results: list[PolicyResult] = []
    err = Console(stderr=True)
    for index, policy in enumerate(scenario.policies, 1):
        try:
            if err.is_terminal:
                columns = (
                    TextColumn("{task.description:>11}"),
                    BarColumn(),
                    TextColumn("{task.fields[t]}"),
                    TimeElapsedColumn(),
                    TextColumn("left"),
                    TimeRemainingColumn(),
                )
                with Progress(*columns, console=err, transient=as_json) as bar:
                    task = bar.add_task(policy, total=end, t="")

                    def update(t: float, task: Any = task, bar: Progress = bar) -> None:
                        bar.update(task, completed=t, t=f"{t / 3600:5.2f}h virtual")

                    results.append(simulate_policy(scenario, pods, policy, progress=update))
            else:
                lines = LineProgress(sys.stderr)
                lines.start(policy, index, len(scenario.policies), end)
                results.append(simulate_policy(scenario, pods, policy, progress=lines.update))
                lines.finish()
        except InvariantViolation as e:
            raise CliError(f"policy {policy}: invariant violated: {e}") from e
        except ValueError as e:
            raise CliError(f"policy {policy}: {e}") from e
    gpus_total = sum(g.count * g.gpus for g in scenario.nodes)
    catalog = default_catalog()
    info.update(
        {
            "name": scenario.name,
            "seed": scenario.seed,
            "pods": len(pods),
            "gpus": gpus_total,
            "nodes": [g.model_dump(exclude={"initial_layout"}) for g in scenario.nodes],
            "staticLayout": {g.model: scenario.static_layout_for(catalog.model(g.model)) for g in scenario.nodes},
            "profileShares": scenario.profile_shares,
            "profileMix": mix_shares(scenario.profile_mix),
            "bestStaticMix": mix_shares(known_mix(scenario, end)),
        }
    )
    title = f"{scenario.name}: {len(pods)} pods, {gpus_total} GPUs"
    if plot_file is not None:
        try:
            plot(results, plot_file, title)
        except OSError as e:
            raise CliError(f"cannot write the plot {plot_file}: {e.strerror or e}") from e
    if as_json:
        click.echo(json.dumps(to_json(info, results, scenario.timings), indent=2, sort_keys=True))
    else:
        table = summary_table(
            results, title, scenario.timings, scenario.profile_shares, info["bestStaticMix"], info["profileMix"]
        )
        Console(width=max(Console().width, 130)).print(table)


if __name__ == "__main__":
    simulate()
