"""``nos partitioner``: the in-cluster partitioner (wiring only; see ``nos.partitioner.runner``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from nos.config import ConfigError, NosConfig, load_config, set_path
from nos.kube.leader import LeadershipLost
from nos.kube.port import Kube
from nos.mig.geometries import GeometryConfigError, load_known_geometries
from nos.mig.packing import Geometry
from nos.obs.health import ObservabilityServer
from nos.obs.lifecycle import default_identity, stop_on_signals
from nos.obs.logging import setup_logging
from nos.obs.metrics import Metrics
from nos.partitioner.runner import PartitionerRunner

log = logging.getLogger(__name__)


def flag_overrides(pairs: dict[str, Any]) -> dict[str, Any]:
    """CLI flags (dotted camelCase paths → value, None = not given) as a nested override mapping."""
    out: dict[str, Any] = {}
    for path, value in pairs.items():
        if value is not None:
            set_path(out, path.split("."), value)
    return out


def load_or_exit(config_file: Path | None, flags: dict[str, Any]) -> NosConfig:
    try:
        return load_config(config_file, overrides=flag_overrides(flags))
    except ConfigError as e:
        raise click.ClickException(f"bad configuration: {e}") from e


def api_kube(kubeconfig: str | None, component: str) -> Kube:
    try:
        from nos.kube.client import from_kubeconfig

        return from_kubeconfig(kubeconfig, component=component)
    except Exception as e:  # lightkube's ConfigError, file errors
        raise click.ClickException(f"no Kubernetes API access ({type(e).__name__}: {e})") from e


def _geometries(config: NosConfig) -> dict[str, list[Geometry]] | None:
    path = config.partitioner.known_geometries_file
    if path is None:
        return None
    try:
        geometries, warnings = load_known_geometries(path)
    except GeometryConfigError as e:
        raise click.ClickException(str(e)) from e
    for w in warnings:
        log.warning("known geometries: %s", w)
    return geometries


@click.command("partitioner")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NOS_CONFIG",
    help="YAML configuration file [env NOS_CONFIG]; NOS_<SECTION>__<FIELD> env vars override it.",
)
@click.option("--kubeconfig", default=None, help="Kubeconfig (default: in-cluster, then $KUBECONFIG).")
@click.option("--identity", default=None, help="Leader election identity (default: <pod name>_<random>).")
@click.option("--leader-elect/--no-leader-elect", default=None, help="Override partitioner.leaderElection.enabled.")
@click.option("--known-geometries", type=click.Path(dir_okay=False), default=None, help="knownMigGeometries file.")
@click.option("--metrics-port", type=int, default=None)
@click.option("--health-port", type=int, default=None)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None)
def partitioner(
    config_file: Path | None,
    kubeconfig: str | None,
    identity: str | None,
    leader_elect: bool | None,
    known_geometries: str | None,
    metrics_port: int | None,
    health_port: int | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run the partitioner: plan MIG layouts for pending pods while holding the leader Lease."""
    config = load_or_exit(
        config_file,
        {
            "partitioner.leaderElection.enabled": leader_elect,
            "partitioner.knownGeometriesFile": known_geometries,
            "server.metricsPort": metrics_port,
            "server.healthPort": health_port,
            "log.level": log_level,
            "log.format": log_format,
        },
    )
    setup_logging(config.log.level, config.log.format)
    geometries = _geometries(config)
    kube = api_kube(kubeconfig, "partitioner")
    code = asyncio.run(serve(kube, config, identity or default_identity(), geometries))
    raise SystemExit(code)


async def serve(
    kube: Kube,
    config: NosConfig,
    identity: str,
    geometries: dict[str, list[Geometry]] | None = None,
    stop: asyncio.Event | None = None,
    **runner_options: Any,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``): 0 after a clean shutdown, 1 when leadership was lost."""
    stop = stop or asyncio.Event()
    metrics = Metrics()
    runner = PartitionerRunner(kube, config, identity, metrics=metrics, geometries=geometries, **runner_options)
    server = ObservabilityServer(
        metrics, runner.ready, config.server.metrics_port, config.server.health_port, live=runner.live
    )
    code = 0
    with stop_on_signals(stop):
        await server.start()
        try:
            await runner.run(stop)
        except LeadershipLost as e:
            log.error("%s; exiting so that a fresh process campaigns again", e)
            code = 1
        finally:
            await server.stop()
            close = getattr(kube, "close", None)
            if close is not None:
                await close()
    log.info("partitioner stopped")
    return code
