"""Every ``nos`` command: help text for every option, one name/type/help per shared option, and
bad input answered with one line and exit status 2."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from nos.cli.main import cli

COMMANDS = sorted(cli.commands)
SHARED = ("--kubeconfig", "--config", "--geometries", "--log-level", "--log-format", "--verbose", "--metrics-port")


def _options(name: str) -> list[click.Option]:
    return [p for p in cli.commands[name].params if isinstance(p, click.Option)]


def test_every_command_is_registered() -> None:
    assert set(COMMANDS) == {"agent", "doctor", "models", "partitioner", "plan", "simulate"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help(name: str) -> None:
    missing = [o.opts[0] for o in _options(name) if not (o.help or "").strip()]
    assert missing == [], f"nos {name}: options without help: {missing}"


@pytest.mark.parametrize("flag", SHARED)
def test_shared_options_have_one_name_type_and_help(flag: str) -> None:
    found = {name: o for name in COMMANDS for o in _options(name) if flag in o.opts}
    assert len(found) >= 2, (flag, list(found))
    first = next(iter(found.values()))
    for name, o in found.items():
        assert (o.opts, type(o.type)) == (first.opts, type(first.type)), (flag, name)
        if flag != "--config":  # its help names the command's own config sections
            assert o.help == first.help, (flag, name)


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_option_is_one_line_and_exit_2(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--no-such-option"])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"nos {name}: ") and "--no-such-option" in line and "--help" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["plan", "/nonexistent.yaml"], "cannot read"),
        (["simulate", "/nonexistent.yaml"], "does not exist"),
        (["agent", "--spec", "/nonexistent.yaml"], "does not exist"),
        (["partitioner", "--config", "/nonexistent.yaml"], "cannot read"),
        (["doctor", "--pending-grace", "soon"], "not a valid float"),
        (["plan", "--geometries", "/nonexistent.yaml", "examples/snapshot.yaml"], "cannot read"),
    ],
)
def test_bad_files_and_values_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(cli, args, env={"NOS_CONFIG": None})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"nos {args[0]}: ") and needle in line
