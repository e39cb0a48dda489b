"""Output of ``nos simulate``: the comparison table, the JSON document and the plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from nos.sim.metrics import PolicyResult, versus
from nos.sim.scenario import Timings


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


LEGEND: dict[str, str] = {
    "ideal": "the limit: each GPU a pool of compute and memory slices, no placement rules, layouts change "
    "instantly (no batch window, no plugin restart); same arrivals and scheduling order",
    "best-static": "static MIG layouts chosen by optimization (HiGHS) for the profile mix known before the run "
    "(the workload's definition; for a trace sample, the whole trace)",
    "whole-gpu": "no MIG: one pod per GPU",
    "greedy": "the original nos' planner, in the same partitioner and agent",
    "nos": "this nos",
    "static": "one fixed layout on every GPU (--static-layout)",
    "hindsight-static": "best-static chosen for this run's own pods and their real run times (hindsight)",
}
"""One line per policy, printed under the table (the row names are the policy names)."""

COLUMNS = (
    "policy",
    "pods done",
    "mean pending",
    "p50",
    "p95",
    "max",
    "never scheduled",
    "allocation",
    "plugin restarts",
    "arrival→device",
)


def _parameters(timings: Timings) -> str:
    return (
        f"batch window {timings.batch_window_idle_s:g}s idle / {timings.batch_window_timeout_s:g}s max, "
        f"device-plugin restart {timings.device_plugin_restart_s:g}s, "
        f"scheduler retry {timings.scheduler_retry_s:g}s, agent period {timings.agent_interval_s:g}s, "
        f"partitioner resync {timings.partitioner_resync_s:g}s"
    )


def summary_table(
    results: Sequence[PolicyResult],
    title: str,
    timings: Timings | None = None,
    shares: float | None = None,
    static_mix: Mapping[str, float] | None = None,
    nos_mix: Mapping[str, float] | None = None,
) -> Table:
    """``static_mix``: the mix best-static was configured for, as shares (shown when it ran);
    ``nos_mix``: the mix nos' shares follow."""
    caption = [f"[b]{r.policy}[/b]: {LEGEND.get(r.policy, r.policy)}" for r in results]
    ideal = next((r for r in results if r.policy == "ideal"), None)
    if ideal is not None:
        for r in results:
            if r.policy == "ideal":
                continue
            v = versus(r, ideal)
            caption.append(
                f"{r.policy} vs ideal: mean pending {_ratio(v['meanPendingRatio'])},"
                f" p95 {_ratio(v['p95PendingRatio'])}, allocation {_ratio(v['allocationRatio'])},"
                f" never scheduled {v['neverScheduledDelta']:+g}"
            )
    left = [f"{r.policy}: {left_over(r.by_profile)}" for r in results if r.never_scheduled]
    if left:
        caption.append("never scheduled, by profile: " + "; ".join(left))
    caption.append(
        "pending: arrival → bind (still pending at the end: counted to the end); arrival→device: mean wait "
        "for the pod's device to be advertised; allocation: compute slices of running pods' profiles, "
        "time-weighted over the arrival window"
    )
    if timings is not None:
        caption.append("parameters: " + _parameters(timings))
    if shares is not None and any(r.policy == "nos" for r in results):
        where = "off" if not shares else "docs/simulate.md, Profile shares"
        following = f", following the mix {_mix(nos_mix)}" if shares and nos_mix else ""
        caption.append(f"nos' profile shares: {shares:g} ({where}){following}")
    if static_mix and any(r.policy == "best-static" for r in results):
        caption.append(f"best-static configured for: {_mix(static_mix)}")
    table = Table(title=title, caption="\n".join(caption), caption_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        table.add_row(
            r.policy,
            f"{r.completed}/{r.pods}",
            _duration(r.mean_pending_s),
            _duration(r.p50_pending_s),
            _duration(r.p95_pending_s),
            _duration(r.max_pending_s),
            str(r.never_scheduled),
            f"{100 * r.allocation:.1f}%",
            str(r.device_plugin_restarts),
            _duration(r.mean_device_wait_s),
        )
    return table


def left_over(by_profile: Mapping[str, Mapping[str, float]]) -> str:
    """The profiles of the never-scheduled pods, most first (which profile a policy starves), from
    ``PolicyResult.by_profile`` or its ``byProfile`` in ``--json``."""
    counts = {p: int(v["neverScheduled"]) for p, v in by_profile.items() if v["neverScheduled"]}
    return ", ".join(f"{p} {n}" for p, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _mix(mix: Mapping[str, float]) -> str:
    return ", ".join(f"{p} {100 * w:.1f}%" for p, w in mix.items())


def _ratio(value: float | None) -> str:
    return "n/a (ideal 0)" if value is None else f"×{value:.2f}"


def parameters_json(timings: Timings) -> dict[str, float]:
    """The simulated latencies, under the JSON document's ``parameters``."""
    return {
        "batchWindowIdleSeconds": timings.batch_window_idle_s,
        "batchWindowTimeoutSeconds": timings.batch_window_timeout_s,
        "devicePluginRestartSeconds": timings.device_plugin_restart_s,
        "schedulerRetrySeconds": timings.scheduler_retry_s,
        "agentIntervalSeconds": timings.agent_interval_s,
        "partitionerResyncSeconds": timings.partitioner_resync_s,
        "reportTimeoutSeconds": timings.report_timeout_s,
        "devicePluginPollSeconds": timings.device_plugin_poll_s,
        "sampleSeconds": timings.sample_s,
    }


def to_json(scenario: dict[str, Any], results: Sequence[PolicyResult], timings: Timings) -> dict[str, Any]:
    """``scenario``: what was run; ``parameters``: the simulated latencies; ``policies.<name>``:
    ``PolicyResult.to_json`` plus ``vsIdeal`` when the ideal ran (documented keys)."""
    ideal = next((r for r in results if r.policy == "ideal"), None)
    policies: dict[str, Any] = {}
    for r in results:
        doc = r.to_json()
        if ideal is not None:
            doc["vsIdeal"] = versus(r, ideal)
        policies[r.policy] = doc
    return {
        "scenario": scenario,
        "parameters": parameters_json(timings),
        "policies": policies,
        "wallSeconds": {r.policy: round(r.wall_s, 3) for r in results},
    }


def plot(results: Sequence[PolicyResult], path: Path, title: str) -> None:
    """Per policy over virtual time: allocation %, pending pods, and the mean and longest wait of
    the pods pending at that time (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (alloc, count, wait) = plt.subplots(3, 1, sharex=True, figsize=(10, 8.5), layout="constrained")
    for r in results:
        hours = [s.t / 3600 for s in r.samples]
        style = {"where": "post", "label": r.policy, "linewidth": 1.2}
        if r.policy == "ideal":
            style.update(color="black", linestyle="--")
        line = alloc.step(hours, [100 * s.allocation for s in r.samples], **style)[0]
        count.step(hours, [s.pending for s in r.samples], **style)
        wait.step(hours, [s.mean_wait_s / 60 for s in r.samples], **style)
        wait.step(
            hours,
            [s.max_wait_s / 60 for s in r.samples],
            where="post",
            color=line.get_color(),
            alpha=0.35,
            linewidth=0.8,
        )
    alloc.set_ylabel("compute slices\nallocated (%)")
    alloc.set_ylim(0, 100)
    count.set_ylabel("pending pods")
    wait.set_ylabel("wait of pending pods (min)\nmean; faint: longest")
    wait.set_xlabel("virtual time (hours)")
    alloc.set_title(title)
    handles, labels = alloc.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=len(results), fontsize="small")  # off the curves
    for ax in (alloc, count, wait):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
