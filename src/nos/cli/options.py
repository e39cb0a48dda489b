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


def parse_mix(text: str) -> dict[str, float]:
    """``"7g.80gb=6,1g.10gb=2"`` -> ``{"7g.80gb": 6.0, "1g.10gb": 2.0}`` (a profile mix, relative
    weights); ValueError with a one-line message on a bad item."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        profile, sep, weight = (part.strip() for part in item.partition("="))
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not sep or not profile or not 0 <= value < float("inf"):
            raise ValueError(f"mix item {item!r} is not PROFILE=WEIGHT (a number >= 0)")
        out[profile] = out.get(profile, 0.0) + value
    return out


def mix_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float] | None:
    """``--mix`` as a dict (click's callback: a bad item is a usage error, exit status 2)."""
    try:
        return None if value is None else parse_mix(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


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
