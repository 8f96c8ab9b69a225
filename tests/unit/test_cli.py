"""The command line: every command group is there, and refusals end with a message and a code."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bookstore.cli import app, main
from bookstore.runtime.secret import S3_ID_ENV, S3_KEY_ENV, TOKEN_ENV

# What `bookstore --help` lists, in its order: the commands, then the groups with their commands.
COMMANDS = ["up", "seed", "status", "drill", "conflicts", "aws-env", "publish", "operator-link"]
GROUPS = {
    "region": ["serve", "agent", "kill", "stop", "start"],
    "users": ["add", "confirm-code"],
    "link": ["cut", "heal", "set", "show"],
    "edge": ["serve"],
    "api": ["break", "repair"],
    "s3": ["break", "repair", "rotate-key", "keys"],
    "secrets": ["rotate", "export", "import"],
    "tls": ["init", "issue"],
    "aws": [
        "make-global",
        "describe-global",
        "plan",
        "deploy",
        "status",
        "destroy",
        "publish",
        "promote-blog",
        "drill",
    ],
    "blog": ["promote", "rejoin", "switchover", "diverged"],
    "config": ["show"],
}


def test_every_command_and_group_is_listed_in_order() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    context = typer.Context(root)
    assert root.list_commands(context) == COMMANDS + list(GROUPS)
    for name, commands in GROUPS.items():
        group = root.get_command(context, name)
        assert isinstance(group, typer.core.TyperGroup)
        assert group.list_commands(typer.Context(group)) == commands


def test_python_dash_m_bookstore_runs_the_command_line() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "bookstore", "link", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "Cut, heal and slow the links between regions." in shown.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["drill", "no-such-drill"], 2, "error: unknown scenario 'no-such-drill'; one of: region-outage"),
        (["secrets", "rotate", "--only", "bogus"], 2, "error: unknown credential(s) bogus; known: s3"),
        (["link", "show"], 2, "error: no operator token at"),
        (["operator-link"], 2, "error: no operator token at"),
        (["aws-env"], 2, "error: no S3 credentials at"),
        (["region", "serve", "--region", "nowhere-1"], 2, "unknown region 'nowhere-1'"),
        (["region", "agent", "--region", "eu-west-1"], 2, "error: eu-west-1 has no agent: set agent_port"),
    ],
)
def test_a_refusal_prints_its_reason_and_exits_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    # An empty data directory holds no credentials: commands that need them refuse before any network call.
    for name in (TOKEN_ENV, S3_ID_ENV, S3_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)])

    assert result.exit_code == code, result.output
    assert message in result.output


Command = typer.core.TyperCommand | typer.core.TyperGroup


def _commands(
    group: typer.core.TyperGroup, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Command]]:
    """Every command and group under `group`, with the words that name it."""
    found: list[tuple[tuple[str, ...], Command]] = []
    for name in group.list_commands(typer.Context(group)):
        command = group.get_command(typer.Context(group), name)
        assert isinstance(command, typer.core.TyperCommand | typer.core.TyperGroup)
        found.append(((*path, name), command))
        if isinstance(command, typer.core.TyperGroup):
            found += _commands(command, (*path, name))
    return found


def test_every_command_argument_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    missing = []
    for path, command in [((), root), *_commands(root)]:
        if not (command.help or command.short_help):
            missing.append(f"bookstore {' '.join(path)}: no help")
        for param in command.params:
            if param.name in ("help", "install_completion", "show_completion"):
                continue
            if not getattr(param, "help", None):
                missing.append(f"bookstore {' '.join(path)} {param.name}: no help")
    assert missing == []


def test_version_prints_the_installed_version() -> None:
    shown = CliRunner().invoke(app, ["--version"])
    assert shown.exit_code == 0
    assert shown.output.strip() == f"bookstore {metadata.version('bookstore')}"


def test_elsewhere_than_linux_the_command_ends_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 2
