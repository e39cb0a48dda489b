"""``nos doctor``: check a live cluster's nos setup and say what to fix (read-only)."""

from __future__ import annotations

import asyncio
import sys

import click
from lightkube import ConfigError

from nos.cli.errors import Command
from nos.cli.options import kubeconfig_option
from nos.doctor.checks import PENDING_GRACE_S, run_checks
from nos.doctor.collect import DEFAULT_AGENT_SELECTOR, DEFAULT_MIG_MANAGER_SELECTOR, ClusterFacts, collect
from nos.doctor.report import Report
from nos.kube.client import from_kubeconfig
from nos.kube.port import Kube, KubeError


async def diagnose(
    kube: Kube,
    namespace: str | None,
    agent_selector: str,
    mig_manager_selector: str,
    pending_grace_s: float = PENDING_GRACE_S,
) -> Report:
    facts: ClusterFacts = await collect(kube, namespace, agent_selector, mig_manager_selector)
    return run_checks(facts, pending_grace_s=pending_grace_s)


async def _run(
    kubeconfig: str | None, namespace: str | None, agent_selector: str, mig_manager_selector: str, grace: float
) -> Report:
    kube = from_kubeconfig(kubeconfig, component="doctor")
    try:
        return await diagnose(kube, namespace, agent_selector, mig_manager_selector, grace)
    finally:
        await kube.close()


@click.command(cls=Command)
@kubeconfig_option
@click.option(
    "--namespace", "-n", default=None, help="Namespace of the MIG agent pods (the Helm release's); default: all."
)
@click.option(
    "--agent-selector", default=DEFAULT_AGENT_SELECTOR, show_default=True, help="Labels of the MIG agent pods."
)
@click.option(
    "--mig-manager-selector",
    default=DEFAULT_MIG_MANAGER_SELECTOR,
    show_default=True,
    help="Labels of NVIDIA's MIG manager pods (all namespaces).",
)
@click.option(
    "--pending-grace",
    type=float,
    default=PENDING_GRACE_S,
    show_default=True,
    help="Seconds a plan may stay unreported before it is a warning.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(
    kubeconfig: str | None,
    namespace: str | None,
    agent_selector: str,
    mig_manager_selector: str,
    pending_grace: float,
    as_json: bool,
) -> None:
    """Check that nos can partition the GPUs of this cluster.

    Per labelled node: GPU model known, MIG resources advertised (mixed strategy), NVIDIA's MIG
    manager not in the way, an agent running, status reported and matching the spec. Exit status
    0 all ok, 1 warnings, 2 failures (or the cluster could not be read).
    """
    try:
        report = asyncio.run(_run(kubeconfig, namespace, agent_selector, mig_manager_selector, pending_grace))
    except (KubeError, ConfigError, OSError, ValueError) as e:
        click.echo(f"nos doctor: cannot read the cluster: {e}", err=True)
        sys.exit(2)
    click.echo(report.to_json() if as_json else report.to_text())
    sys.exit(report.exit_code)
