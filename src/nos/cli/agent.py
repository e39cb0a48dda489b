"""``nos agent``: options in, ``Manager.run(AgentRunner)`` for one node (the logic lives in ``nos.agent``,
the loop in ``nos.runtime``); offline it prints what the agent did."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, cast

import click
import yaml

from nos.agent.agent import MigAgent, ReconcileResult
from nos.agent.offline import SpecFileError, load_node_file, offline_node
from nos.agent.podresources import DEFAULT_SOCKET, EXTRA_HINT, PodResourcesClient
from nos.agent.runner import AgentRunner
from nos.cli.errors import BadInput, CliError, Command
from nos.cli.options import chosen_log_level, config_option, kubeconfig_option, log_options, port_options
from nos.cli.partitioner import load_or_exit
from nos.gpu.port import Nvml, NvmlError
from nos.kube.fake.memory import MemoryKube
from nos.kube.port import Kube
from nos.obs.logging import setup_logging
from nos.runtime.manager import Manager


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
    except ImportError as e:
        raise CliError(f"{EXTRA_HINT} ({e})") from e
    except AttributeError as e:
        raise CliError(f"backend {module}.{name} is not available: {e}") from e


def _require_grpc() -> None:
    """The kubelet PodResources client needs grpcio and protobuf (the ``agent`` extra)."""
    for module in ("grpc", "google.protobuf"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CliError(f"{EXTRA_HINT} ({e})") from e


def _backend(spec: str) -> _Backend:
    if spec == "nvml":
        real = _backend_class("nos.gpu.nvml", "PynvmlNvml")
        try:
            return _Backend(cast(Nvml, real()))
        except NvmlError as e:  # no driver / library on this machine: one line, not a traceback
            raise CliError(
                f"cannot use NVML: {e} (on a machine without NVIDIA GPUs try --backend simulated:FILE)"
            ) from e
    if spec.startswith("simulated:") and len(spec) > len("simulated:"):
        path = Path(spec.split(":", 1)[1])
        simulated = _backend_class("nos.gpu.simulated", "SimulatedNvml")
        try:
            nvml = simulated.load(path)
        except (OSError, ValueError) as e:
            raise BadInput(f"cannot load simulated node {path}: {e}") from e
        return _Backend(cast(Nvml, nvml), path)
    raise click.BadParameter("expected 'nvml' or 'simulated:FILE'", param_hint="'--backend'")


def _api_kube(kubeconfig: str | None) -> Kube:
    try:
        from nos.kube.client import from_kubeconfig

        return from_kubeconfig(kubeconfig, component="agent")
    except Exception as e:  # lightkube raises its own ConfigError, and file errors
        raise CliError(
            f"no Kubernetes API access ({type(e).__name__}: {e}); give --spec FILE to run without a cluster"
        ) from e


def _print_result(result: ReconcileResult, dry_run: bool, print_status: bool, name_note: str | None = None) -> None:
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
        if name_note:  # a YAML comment: the printed status stays loadable
            click.echo(name_note)


@click.command("agent", cls=Command)
@click.option(
    "--node",
    "node_name",
    envvar="NODE_NAME",
    help="Node to manage [env NODE_NAME]; offline: default the simulated file's node, else this host's name.",
)
@click.option(
    "--backend",
    default="nvml",
    show_default=True,
    help="GPU access: nvml (real GPUs, the 'agent' extra), or simulated:FILE (a simulated node, docs/nvml.md).",
)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the node's annotations from a YAML/JSON file instead of the API; print the status.",
)
@click.option("--dry-run", is_flag=True, help="Print the operations without touching any GPU (offline: runs once).")
@click.option("--once", is_flag=True, help="Reconcile once and exit.")
@config_option("agent, server, log")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between reconciles [config: 60].",
)
@kubeconfig_option
@click.option("--podresources-socket", default=None, help=f"kubelet PodResources socket [config: {DEFAULT_SOCKET}].")
@click.option(
    "--device-plugin-namespace",
    default=None,
    help="Namespace of the device plugin pods to restart [config: gpu-operator].",
)
@click.option(
    "--device-plugin-selector",
    default=None,
    help="Label selector of the device plugin pods [config: app=nvidia-device-plugin-daemonset].",
)
@click.option(
    "--device-plugin-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to wait for the restarted device plugin [config: 180].",
)
@port_options
@log_options
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
    log_level: str | None,
    log_format: str | None,
    verbose: bool,
) -> None:
    """Make this node's MIG layout match its spec annotations and report the actual state.

    In the cluster (no --spec, no --once) it watches its own Node, reconciles at once when the spec
    changes, reports periodically, serves /metrics, /healthz and /readyz. Offline, with --spec FILE
    or --backend simulated:FILE (and no --kubeconfig), the node comes from the files, no cluster is
    needed, and the status annotations are printed."""
    settings = load_or_exit(
        config_file,
        {
            "agent.reportIntervalSeconds": interval,
            "agent.dryRun": dry_run or None,
            "agent.podResourcesSocket": podresources_socket,
            "agent.devicePlugin.namespace": device_plugin_namespace,
            "agent.devicePlugin.labelSelector": device_plugin_selector,
            "agent.devicePlugin.timeoutSeconds": device_plugin_timeout,
            "server.metricsPort": metrics_port,
            "server.healthPort": health_port,
            "log.level": chosen_log_level(log_level, verbose),
            "log.format": log_format,
        },
    )
    simulated = backend.startswith("simulated:")
    offline = spec_file is not None or (simulated and kubeconfig is None)
    once = once or (offline and (settings.agent.dry_run or spec_file is None))
    in_cluster = not offline and not once
    if in_cluster:
        setup_logging(settings.log.level, settings.log.format)
    else:
        offline_level = (chosen_log_level(log_level, verbose) or "warning").upper()
        logging.basicConfig(level=getattr(logging, offline_level), format="%(levelname)s %(message)s")
    podresources_socket = settings.agent.pod_resources_socket
    kube: Any
    name_source: str | None = None
    gpu = _backend(backend) if simulated else None  # a simulated node file names its node
    if offline:
        given = node_name
        from_file = getattr(gpu.nvml if gpu else None, "node", None)
        node_name = given or from_file or socket.gethostname()
        try:
            node = load_node_file(spec_file, node_name) if spec_file is not None else offline_node(node_name)
        except SpecFileError as e:
            raise BadInput(str(e)) from e
        if node["metadata"]["name"] != given:  # say where an offline node's name came from
            if node["metadata"]["name"] != node_name:
                name_source = "the spec file's Node"
            else:
                name_source = "the simulated node file's" if from_file else "this host's"
        node_name = node["metadata"]["name"]
        kube = MemoryKube()
        kube.add_node(node)
    else:
        if not node_name:
            raise BadInput("no node name: set NODE_NAME or pass --node")
        kube = _api_kube(kubeconfig)
    assert node_name is not None
    gpu = gpu or _backend(backend)
    # Without a kubelet (offline use) only NVML's busy instances count as in use.
    offline_without_kubelet = offline and not os.path.exists(podresources_socket)
    if not offline_without_kubelet:
        _require_grpc()
    podresources = None if offline_without_kubelet else PodResourcesClient(podresources_socket)
    # offline there is no device plugin to restart
    config = settings.agent
    if offline:  # no device plugin to restart
        config = config.model_copy(update={"restart_device_plugin": False})
    manager = Manager(kube, server=settings.server if in_cluster else None)
    mig_agent = MigAgent(node_name, gpu.nvml, kube, podresources, config, recorder=manager.recorder)
    if in_cluster:
        raise SystemExit(asyncio.run(manager.run(AgentRunner(manager, mig_agent))))
    note = f"# node {node_name}: {name_source} name (--node to choose)" if name_source else None
    saved = gpu

    def after(result: ReconcileResult) -> None:
        if not config.dry_run:
            saved.save()
        _print_result(result, config.dry_run, offline and (once or bool(result.patch)), note)

    runner = AgentRunner(manager, mig_agent, watch=False, after=after)
    asyncio.run(manager.run(runner, once=once))
    last = runner.last
    if once and last is not None and last.applied is not None and last.applied.failures:
        raise SystemExit(1)
