"""``nos``: the command line. Each sub-command lives in a module of its own."""

from __future__ import annotations

import click

from nos import __version__
from nos.cli.errors import Group


@click.group("nos", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nos")
def cli() -> None:
    """nos: dynamic MIG partitioning of NVIDIA GPUs in Kubernetes."""


def _register() -> None:
    """Every command is registered; what needs an extra (NVML, gRPC) imports it when it runs."""
    from nos.cli.agent import agent
    from nos.cli.doctor import doctor
    from nos.cli.models import models
    from nos.cli.partitioner import partitioner
    from nos.cli.plan import plan
    from nos.cli.simulate import simulate

    cli.add_command(plan)
    cli.add_command(models)
    cli.add_command(simulate)
    cli.add_command(doctor)
    cli.add_command(partitioner)
    cli.add_command(agent)


_register()


def main() -> None:
    cli()
