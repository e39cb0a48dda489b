"""``nos partitioner``: options in, ``Manager.run(PartitionerRunner)`` (``nos.runtime``, ``nos.partitioner.runner``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from nos.cli.errors import BadInput, CliError, Command
from nos.cli.options import (
    chosen_log_level,
    config_option,
    geometries_option,
    kubeconfig_option,
    log_options,
    port_options,
)
from nos.config import ConfigError, NosConfig, flag_overrides, load_config
from nos.kube.port import Kube
from nos.mig.geometries import GeometryConfigError, load_known_geometries
from nos.mig.packing import Geometry
from nos.obs.lifecycle import default_identity
from nos.obs.logging import setup_logging
from nos.partitioner.runner import PartitionerRunner
from nos.runtime.manager import Manager

log = logging.getLogger(__name__)


def load_or_exit(config_file: Path | None, flags: dict[str, Any]) -> NosConfig:
    try:
        return load_config(config_file, overrides=flag_overrides(flags))
    except ConfigError as e:
        raise BadInput(f"bad configuration: {e}") from e


def api_kube(kubeconfig: str | None, component: str) -> Kube:
    try:
        from nos.kube.client import from_kubeconfig

        return from_kubeconfig(kubeconfig, component=component)
    except Exception as e:  # lightkube's ConfigError, file errors
        raise CliError(f"no Kubernetes API access ({type(e).__name__}: {e})") from e


def _geometries(config: NosConfig) -> dict[str, list[Geometry]] | None:
    path = config.partitioner.known_geometries_file
    if path is None:
        return None
    try:
        geometries, warnings = load_known_geometries(path)
    except GeometryConfigError as e:
        raise BadInput(str(e)) from e
    for w in warnings:
        log.warning("known geometries: %s", w)
    return geometries


@click.command("partitioner", cls=Command)
@config_option("partitioner, server, log")
@kubeconfig_option
@click.option("--identity", default=None, help="Leader election identity (default: <pod name>_<random>).")
@click.option(
    "--leader-elect/--no-leader-elect",
    default=None,
    help="Campaign for the leader Lease before planning [config: partitioner.leaderElection.enabled].",
)
@geometries_option
@port_options
@log_options
def partitioner(
    config_file: Path | None,
    kubeconfig: str | None,
    identity: str | None,
    leader_elect: bool | None,
    geometries: Path | None,
    metrics_port: int | None,
    health_port: int | None,
    log_level: str | None,
    log_format: str | None,
    verbose: bool,
) -> None:
    """Run the partitioner: plan MIG layouts for pending pods while holding the leader Lease."""
    config = load_or_exit(
        config_file,
        {
            "partitioner.leaderElection.enabled": leader_elect,
            "partitioner.knownGeometriesFile": str(geometries) if geometries is not None else None,
            "server.metricsPort": metrics_port,
            "server.healthPort": health_port,
            "log.level": chosen_log_level(log_level, verbose),
            "log.format": log_format,
        },
    )
    setup_logging(config.log.level, config.log.format)
    allowed = _geometries(config)
    manager = Manager(
        api_kube(kubeconfig, "partitioner"),
        server=config.server,
        election=config.partitioner.leader_election,
        identity=identity or default_identity(),
    )
    code = asyncio.run(manager.run(PartitionerRunner(manager, config.partitioner, allowed)))
    log.info("partitioner stopped")
    raise SystemExit(code)
