"""Runs docs/tutorial.md: parses its marked blocks and executes them in order, checking expected output.

The marking convention is documented at the end of the tutorial ("How this page is tested").
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"^<!--\s*tutorial:\s*(?P<what>[a-z]+)\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<info>\S*)\s*$")
HEADING = re.compile(r"^#{2,4}\s+(?P<title>.+?)\s*$")
ELIDED = "..."
COMMAND_TIMEOUT_S = 240.0
# Shell variables of bash itself, not of the tutorial: never carried from one command to the next.
NOT_CARRIED = re.compile(r"declare -\S+ (PWD|OLDPWD|SHLVL|_)(=|$)")


@dataclass
class Command:
    """One `$ ` command (with its `> ` continuation lines) and the lines its output must contain."""

    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    """A ```console block under a heading; `mode` is run, skip or addresses; `until` retries for seconds."""

    step: str
    commands: list[Command]
    mode: str = "run"
    until: float | None = None


@dataclass
class BrowserStep:
    """`<!-- tutorial: browser ACTION ARG -->`: a step the runner does in the browser."""

    step: str
    action: str
    argument: str


Item = Block | BrowserStep


class TutorialError(AssertionError):
    """A step whose command failed or whose output lacked an expected line; names the step."""


def parse(markdown: str) -> list[Item]:
    """The tutorial's runnable items in order: console blocks (with their markers) and browser steps."""
    items: list[Item] = []
    step = "(before the first heading)"
    pending: tuple[str, str] | None = None
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if heading := HEADING.match(line):
            step = heading["title"]
        elif marker := MARKER.match(line):
            what, arg = marker["what"], marker["arg"]
            if what == "browser":
                action, _, argument = arg.partition(" ")
                items.append(BrowserStep(step, action, argument.strip()))
            elif what in ("skip", "addresses", "until"):
                pending = (what, arg)
            else:
                raise ValueError(f"unknown tutorial marker {line!r} in step {step!r}")
        elif fence := FENCE.match(line):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"an unclosed code block in step {step!r}")
            if fence["info"] == "console":
                items.append(_block(step, lines[i + 1 : end], pending))
            pending = None
            i = end
        elif line.strip():
            pending = None  # a marker applies to the block right below it only
        i += 1
    return items


def _block(step: str, body: Sequence[str], marker: tuple[str, str] | None) -> Block:
    commands: list[Command] = []
    for line in body:
        if line.startswith("$ "):
            commands.append(Command(line[2:]))
        elif line.startswith("> ") and commands and not commands[-1].expected:
            commands[-1].text += "\n" + line[2:]
        elif line.strip() and line.strip() != ELIDED:
            if not commands:
                raise ValueError(f"expected output before any command in step {step!r}")
            commands[-1].expected.append(line.strip())
    block = Block(step, commands)
    if marker is not None:
        what, arg = marker
        if what == "until":
            block.until = float(arg)
        else:
            block.mode = what
    return block


@dataclass
class Runner:
    """Executes items in `workdir`, each command in bash with the variables the earlier ones set.

    `setup` replaces the tutorial's addresses block; `addresses` maps the default addresses in
    expected output to the test's; `browser(action, argument)` does a browser step.
    """

    workdir: Path
    setup: str
    addresses: Mapping[str, str]
    browser: Callable[[str, str], None]
    env: Mapping[str, str]
    done: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = self.workdir / ".tutorial-state.sh"
        self.state.write_text("", encoding="utf-8")

    def run(self, items: Sequence[Item]) -> None:
        for item in items:
            if isinstance(item, BrowserStep):
                try:
                    self.browser(item.action, item.argument)
                except Exception as exc:
                    raise TutorialError(
                        f"step {item.step!r}: browser {item.action} {item.argument}: {exc}"
                    ) from exc
            elif item.mode == "addresses":
                self._execute(item.step, Command(self.setup))
            elif item.mode == "run":
                self._block(item)
            self.done.append(item.step)

    def _block(self, block: Block) -> None:
        deadline = time.monotonic() + (block.until or 0.0)
        while True:
            try:
                for command in block.commands:
                    self._execute(block.step, command)
                return
            except TutorialError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)

    def _execute(self, step: str, command: Command) -> None:
        script = (
            f"set -a\nsource {self.state}\ncd {self.workdir}\n{command.text}\n"
            f"rc=$?\nexport -p > {self.state}.new\nexit $rc\n"
        )
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                env=dict(self.env),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TutorialError(f"step {step!r}: `{command.text}` did not finish in {exc.timeout} s") from exc
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise TutorialError(
                f"step {step!r}: `{command.text}` exited {done.returncode}:\n{output[-3000:]}"
            )
        self._keep_variables()
        missing = [line for line in command.expected if self._expected(line) not in _squeezed(output)]
        if missing:
            raise TutorialError(
                f"step {step!r}: `{command.text}` printed no line with {missing!r}:\n{output[-3000:]}"
            )

    def _keep_variables(self) -> None:
        kept = [
            line
            for line in (self.workdir / ".tutorial-state.sh.new").read_text(encoding="utf-8").splitlines()
            if not NOT_CARRIED.match(line)
        ]
        self.state.write_text("\n".join(kept) + "\n", encoding="utf-8")

    def _expected(self, line: str) -> str:
        for default, actual in self.addresses.items():
            line = line.replace(default, actual)
        return _squeezed(line)


def _squeezed(text: str) -> str:
    """Runs of spaces as one, so that an expected fragment does not depend on a table's padding."""
    return re.sub(r"[ \t]+", " ", text)
