"""``nos agent``: run the MIG agent for one node (wiring only; the logic lives in ``nos.agent``)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from pathlib import Path
from typing import Any, cast

import click
import yaml

from nos.agent.agent import AgentConfig, MigAgent, ReconcileResult
from nos.agent.device_plugin import DevicePluginConfig
from nos.agent.offline import OfflineKube, SpecFileError, load_node_file
from nos.agent.podresources import DEFAULT_SOCKET, PodResourcesClient
from nos.gpu.port import Nvml
from nos.kube.port import Kube


class _Backend:
    """An ``Nvml`` plus what to do after each reconcile (the simulated one saves its file)."""

    def __init__(self, nvml: Nvml, save_to: Path | None = None) -> None:
        self.nvml, self.save_to = nvml, save_to

    def save(self) -> None:
        if self.save_to is not None:
            self.nvml.save(self.save_to)  # type: ignore[attr-defined]


def _backend_class(module: str, name: str) -> Any:
    # Imported by name: the backends are optional (nvidia-ml-py is an extra) and load lazily.
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise click.ClickException(f"backend {module}.{name} is not available: {e}") from e


def _backend(spec: str) -> _Backend:
    if spec == "nvml":
        return _Backend(cast(Nvml, _backend_class("nos.gpu.nvml", "PynvmlNvml")()))
    if spec.startswith("simulated:") and len(spec) > len("simulated:"):
        path = Path(spec.split(":", 1)[1])
        simulated = _backend_class("nos.gpu.simulated", "SimulatedNvml")
        try:
            nvml = simulated.load(path)
        except (OSError, ValueError) as e:
            raise click.ClickException(f"cannot load simulated node {path}: {e}") from e
        return _Backend(cast(Nvml, nvml), path)
    raise click.BadParameter("expected 'nvml' or 'simulated:FILE'", param_hint="--backend")


def _api_kube(kubeconfig: str | None) -> Kube:
    try:
        from nos.kube.client import from_kubeconfig

        return from_kubeconfig(kubeconfig, component="agent")
    except Exception as e:  # lightkube raises its own ConfigError, and file errors
        raise click.ClickException(
            f"no Kubernetes API access ({type(e).__name__}: {e}); give --spec FILE to run without a cluster"
        ) from e


def _print_result(result: ReconcileResult, dry_run: bool, print_status: bool) -> None:
    verb = "would" if dry_run else "will"
    if not result.ops:
        click.echo("nothing to do")
    for op in result.ops:
        click.echo(f"{verb} {op}")
    for s in result.skipped:
        click.echo(f"skipped {s}")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.applied is not None:
        for r in result.applied.failures:
            click.echo(f"FAILED {r.op}: {r.error}")
    if print_status:
        click.echo("# status annotations")
        click.echo(yaml.safe_dump(result.status, sort_keys=True), nl=False)


@click.command("agent")
@click.option("--node", "node_name", envvar="NODE_NAME", help="Node to manage [env NODE_NAME].")
@click.option("--backend", default="nvml", show_default=True, help="nvml, or simulated:FILE (a simulated node).")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the node's annotations from a YAML/JSON file instead of the API; print the status.",
)
@click.option("--dry-run", is_flag=True, help="Print the operations without touching any GPU.")
@click.option("--once", is_flag=True, help="Reconcile once and exit.")
@click.option("--interval", type=float, default=60.0, show_default=True, help="Seconds between reconciles.")
@click.option("--kubeconfig", type=str, default=None, help="Kubeconfig (default: in-cluster, $KUBECONFIG).")
@click.option("--podresources-socket", default=DEFAULT_SOCKET, show_default=True)
@click.option("--device-plugin-namespace", default="gpu-operator", show_default=True)
@click.option("--device-plugin-selector", default="app=nvidia-device-plugin-daemonset", show_default=True)
@click.option("--device-plugin-timeout", type=float, default=180.0, show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
def agent(
    node_name: str | None,
    backend: str,
    spec_file: Path | None,
    dry_run: bool,
    once: bool,
    interval: float,
    kubeconfig: str | None,
    podresources_socket: str,
    device_plugin_namespace: str,
    device_plugin_selector: str,
    device_plugin_timeout: float,
    verbose: bool,
) -> None:
    """Make this node's MIG layout match its spec annotations and report the actual state."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    kube: Any
    if spec_file is not None:
        try:
            node = load_node_file(spec_file, node_name or "local")
        except SpecFileError as e:
            raise click.ClickException(str(e)) from e
        node_name = node["metadata"]["name"]
        kube = OfflineKube(node)
    else:
        if not node_name:
            raise click.ClickException("no node name: set NODE_NAME or pass --node")
        kube = _api_kube(kubeconfig)
    assert node_name is not None
    gpu = _backend(backend)
    # Without a kubelet (offline use) only NVML's busy instances count as in use.
    offline_without_kubelet = spec_file is not None and not os.path.exists(podresources_socket)
    podresources = None if offline_without_kubelet else PodResourcesClient(podresources_socket)
    config = AgentConfig(
        report_interval_s=interval,
        dry_run=dry_run,
        restart_device_plugin=spec_file is None,
        device_plugin=DevicePluginConfig(
            namespace=device_plugin_namespace,
            label_selector=device_plugin_selector,
            timeout_s=device_plugin_timeout,
        ),
    )
    mig_agent = MigAgent(node_name, gpu.nvml, kube, podresources, config)
    failed = asyncio.run(_loop(mig_agent, gpu, once, interval, print_status=spec_file is not None))
    if failed:
        raise SystemExit(1)


async def _loop(mig_agent: MigAgent, gpu: _Backend, once: bool, interval: float, print_status: bool) -> bool:
    try:
        while True:
            result = await mig_agent.reconcile_once()
            if not mig_agent.config.dry_run:
                gpu.save()
            _print_result(result, mig_agent.config.dry_run, print_status and (once or bool(result.patch)))
            if once:
                return bool(result.applied and result.applied.failures)
            await asyncio.sleep(interval)
    finally:
        mig_agent.close()
        close = getattr(mig_agent.kube, "close", None)
        if close is not None:
            await close()
