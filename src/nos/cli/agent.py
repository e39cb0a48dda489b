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

from nos.agent.agent import MigAgent, ReconcileResult
from nos.agent.offline import SpecFileError, load_node_file
from nos.agent.podresources import DEFAULT_SOCKET, PodResourcesClient
from nos.agent.runner import AgentRunner
from nos.cli.partitioner import load_or_exit
from nos.config import NosConfig
from nos.gpu.port import Nvml, NvmlError
from nos.kube.memory import MemoryKube
from nos.kube.port import Kube
from nos.obs.health import ObservabilityServer
from nos.obs.lifecycle import stop_on_signals
from nos.obs.logging import setup_logging
from nos.obs.metrics import Metrics


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
        real = _backend_class("nos.gpu.nvml", "PynvmlNvml")
        try:
            return _Backend(cast(Nvml, real()))
        except NvmlError as e:  # no driver / library on this machine: one line, not a traceback
            raise click.ClickException(
                f"cannot use NVML: {e} (on a machine without NVIDIA GPUs try --backend simulated:FILE)"
            ) from e
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
    verb = "would" if dry_run else "applied"
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
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NOS_CONFIG",
    help="YAML configuration file [env NOS_CONFIG] (section agent, server, log); flags override it.",
)
@click.option("--interval", type=float, default=None, help="Seconds between reconciles [config: 60].")
@click.option("--kubeconfig", type=str, default=None, help="Kubeconfig (default: in-cluster, $KUBECONFIG).")
@click.option("--podresources-socket", default=None, help=f"[config: {DEFAULT_SOCKET}]")
@click.option("--device-plugin-namespace", default=None, help="[config: gpu-operator]")
@click.option("--device-plugin-selector", default=None, help="[config: app=nvidia-device-plugin-daemonset]")
@click.option("--device-plugin-timeout", type=float, default=None, help="[config: 180]")
@click.option("--metrics-port", type=int, default=None, help="In-cluster mode [config: 8080].")
@click.option("--health-port", type=int, default=None, help="In-cluster mode [config: 8081].")
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
def agent(
    node_name: str | None,
    backend: str,
    spec_file: Path | None,
    dry_run: bool,
    once: bool,
    config_file: Path | None,
    interval: float | None,
    kubeconfig: str | None,
    podresources_socket: str | None,
    device_plugin_namespace: str | None,
    device_plugin_selector: str | None,
    device_plugin_timeout: float | None,
    metrics_port: int | None,
    health_port: int | None,
    verbose: bool,
) -> None:
    """Make this node's MIG layout match its spec annotations and report the actual state.

    Without --spec and --once it runs in the cluster: watches its own Node, reconciles at once when
    the spec changes, reports periodically, serves /metrics, /healthz and /readyz."""
    settings = load_or_exit(
        config_file,
        {
            "agent.reportIntervalSeconds": interval,
            "agent.podResourcesSocket": podresources_socket,
            "agent.devicePlugin.namespace": device_plugin_namespace,
            "agent.devicePlugin.labelSelector": device_plugin_selector,
            "agent.devicePlugin.timeoutSeconds": device_plugin_timeout,
            "server.metricsPort": metrics_port,
            "server.healthPort": health_port,
            "log.level": "debug" if verbose else None,
        },
    )
    in_cluster = spec_file is None and not once
    if in_cluster:
        setup_logging(settings.log.level, settings.log.format)
    else:
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    interval = settings.agent.report_interval_seconds
    podresources_socket = settings.agent.pod_resources_socket
    kube: Any
    if spec_file is not None:
        try:
            node = load_node_file(spec_file, node_name or "local")
        except SpecFileError as e:
            raise click.ClickException(str(e)) from e
        node_name = node["metadata"]["name"]
        kube = MemoryKube()
        kube.add_node(node)
    else:
        if not node_name:
            raise click.ClickException("no node name: set NODE_NAME or pass --node")
        kube = _api_kube(kubeconfig)
    assert node_name is not None
    gpu = _backend(backend)
    # Without a kubelet (offline use) only NVML's busy instances count as in use.
    offline_without_kubelet = spec_file is not None and not os.path.exists(podresources_socket)
    podresources = None if offline_without_kubelet else PodResourcesClient(podresources_socket)
    config = settings.agent.agent_config(dry_run=dry_run)
    if spec_file is not None:  # offline: no device plugin to restart
        config = config.model_copy(update={"restart_device_plugin": False})
    mig_agent = MigAgent(node_name, gpu.nvml, kube, podresources, config)
    if in_cluster:
        raise SystemExit(asyncio.run(serve_agent(mig_agent, settings)))
    failed = asyncio.run(_loop(mig_agent, gpu, once, interval, print_status=spec_file is not None))
    if failed:
        raise SystemExit(1)


async def serve_agent(mig_agent: MigAgent, settings: NosConfig, stop: asyncio.Event | None = None) -> int:
    """In-cluster mode until SIGTERM/SIGINT (or ``stop``); 0 after a clean shutdown."""
    stop = stop or asyncio.Event()
    metrics = Metrics()
    runner = AgentRunner(mig_agent, metrics=metrics)
    server = ObservabilityServer(
        metrics, runner.ready, settings.server.metrics_port, settings.server.health_port, live=runner.live
    )
    with stop_on_signals(stop):
        await server.start()
        try:
            await runner.run(stop)
        finally:
            await server.stop()
            mig_agent.close()
            close = getattr(mig_agent.kube, "close", None)
            if close is not None:
                await close()
    return 0


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
