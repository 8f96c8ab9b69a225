"""How a command ends when it is refused: the message on stderr, then a non-zero exit code."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: <message>` to stderr and end the command with `code` (1: refused, 2: cannot run)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code) from None
