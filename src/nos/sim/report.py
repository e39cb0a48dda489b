"""Output of ``nos simulate``: the comparison table, the JSON document and the plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from nos.sim.metrics import PolicyResult


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


def summary_table(results: Sequence[PolicyResult], title: str) -> Table:
    table = Table(title=title)
    for column in (
        "policy",
        "pods done",
        "mean pending",
        "p95 pending",
        "allocation",
        "plugin restarts",
        "nodes reconfigured",
        "never scheduled",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        table.add_row(
            r.policy,
            f"{r.completed}/{r.pods}",
            _duration(r.mean_pending_s),
            _duration(r.p95_pending_s),
            f"{100 * r.allocation:.1f}%",
            str(r.device_plugin_restarts),
            str(r.node_reconfigurations),
            str(r.never_scheduled),
        )
    return table


def to_json(scenario: dict[str, Any], results: Sequence[PolicyResult]) -> dict[str, Any]:
    """``scenario``: what was run; ``policies.<name>``: ``PolicyResult.to_json`` (documented keys)."""
    return {"scenario": scenario, "policies": {r.policy: r.to_json() for r in results}}


def plot(results: Sequence[PolicyResult], path: Path, title: str) -> None:
    """Allocation % and pending pods over time, one line per policy (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    for r in results:
        hours = [s.t / 3600 for s in r.samples]
        top.step(hours, [100 * s.allocation for s in r.samples], where="post", label=r.policy, linewidth=1.2)
        bottom.step(hours, [s.pending for s in r.samples], where="post", label=r.policy, linewidth=1.2)
    top.set_ylabel("compute slices allocated (%)")
    top.set_ylim(0, 100)
    bottom.set_ylabel("pending pods")
    bottom.set_xlabel("virtual time (hours)")
    top.legend(loc="upper right")
    top.set_title(title)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
