"""Options shared by several ``nos`` commands: one name, type and help text for one thing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

LOG_LEVELS = ("debug", "info", "warning", "error")


def kubeconfig_option(f: F) -> F:
    return click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        default=None,
        help="Kubeconfig file (default: in-cluster service account, then $KUBECONFIG, ~/.kube/config).",
    )(f)


def config_option(sections: str) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        return click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="NOS_CONFIG",
            help=f"YAML configuration file [env NOS_CONFIG] (sections {sections}); "
            "NOS_<SECTION>__<FIELD> env vars and flags override it.",
        )(f)

    return decorate


def geometries_option(f: F) -> F:
    return click.option(
        "--geometries",
        "--known-geometries",
        "geometries",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="knownMigGeometries YAML: a GPU's layout must fit within one of its model's allowed geometries "
        "(default: every geometry each model supports).",
    )(f)


def log_options(f: F) -> F:
    f = click.option("-v", "--verbose", is_flag=True, help="Log every step (same as --log-level debug).")(f)
    f = click.option(
        "--log-format", type=click.Choice(["json", "text"]), default=None, help="Log format [config: json]."
    )(f)
    return click.option("--log-level", type=click.Choice(LOG_LEVELS), default=None, help="Log level [config: info].")(f)


def chosen_log_level(level: str | None, verbose: bool) -> str | None:
    """``--verbose`` is short for ``--log-level debug``."""
    return "debug" if verbose else level


def port_options(f: F) -> F:
    f = click.option(
        "--health-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Port of /healthz and /readyz [config: 8081].",
    )(f)
    return click.option(
        "--metrics-port", type=click.IntRange(0, 65535), default=None, help="Port of /metrics [config: 8080]."
    )(f)
