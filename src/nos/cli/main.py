"""``nos``: the command line. Each sub-command lives in a module of its own."""

from __future__ import annotations

import importlib

import click

from nos import __version__
from nos.cli.errors import Group

_COMMANDS = {
    "plan": "nos.cli.plan:plan",
    "models": "nos.cli.models:models",
    "simulate": "nos.cli.simulate:simulate",
    "doctor": "nos.cli.doctor:doctor",
    "partitioner": "nos.cli.partitioner:partitioner",
    "agent": "nos.cli.agent:agent",
}
"""Sub-commands by import path, loaded on use: ``nos plan`` does not pay for the agent's gRPC,
the partitioner's HTTP server or the simulator at start-up (click's documented lazy-group pattern);
what needs an extra (NVML, gRPC) still imports it only when it runs."""


class _LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = _COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group("nos", cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nos")
def cli() -> None:
    """nos: dynamic MIG partitioning of NVIDIA GPUs in Kubernetes."""


def main() -> None:
    cli()
