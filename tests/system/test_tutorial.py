"""docs/tutorial.md run top to bottom against a fresh system: every marked command and its output."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.storefront import DESKTOP, launch
from tests.support.prerequisites import require_binary
from tests.support.regions import System, system_up
from tests.support.tutorial import BrowserStep, Runner, TutorialError, parse

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
DEFAULT_ADDRESSES = {"eu-west-1": "127.0.1.1", "ap-southeast-1": "127.0.2.1"}


def setup_lines(system: System) -> str:
    """What the tutorial's addresses block says, for this test's system: its addresses and data dir."""
    topology = system.topology
    edge = topology.edge
    variables = {
        "BOOKSTORE_DATA_DIR": str(system.data_dir),
        "BOOKSTORE_TOPOLOGY": str(system.topology_file),
        "IE": topology.region("eu-west-1").api_url,
        "SG": topology.region("ap-southeast-1").api_url,
        "EDGE": edge.url,
        "CONTROL": topology.control_url,
        "DNS": f"@{edge.dns_address} -p {edge.dns_port}",
        "OPERATOR": f"authorization: Bearer {system.token}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', os.defpath)}",
    }
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in variables.items())


def test_the_marking_convention_is_parsed_as_documented() -> None:
    items = parse(
        "## Step one\n<!-- tutorial: until 5 -->\n```console\n$ echo a \\\n> b\na b\n...\n$ true\n```\n"
        "<!-- tutorial: browser flag Ireland -->\n## Step two\n```sh\n$ not run\n```\n"
        "<!-- tutorial: skip -->\n```console\n$ make up\n```\n"
    )
    first, browser, skipped = items
    assert not isinstance(first, BrowserStep) and not isinstance(skipped, BrowserStep)
    assert (first.step, first.until, first.mode) == ("Step one", 5.0, "run")
    assert [(c.text, c.expected) for c in first.commands] == [("echo a \\\nb", ["a b"]), ("true", [])]
    assert browser == BrowserStep("Step one", "flag", "Ireland")
    assert (skipped.step, skipped.mode) == ("Step two", "skip")


def test_a_changed_output_fails_with_the_step_name(tmp_path: Path) -> None:
    items = parse("## Say hello\n```console\n$ GREETING=hello\n$ echo $GREETING world\nhello moon\n```\n")
    runner = Runner(tmp_path, "", {}, lambda action, arg: None, dict(os.environ))
    with pytest.raises(TutorialError, match=r"step 'Say hello'.*hello moon"):
        runner.run(items)


@pytest.fixture
def tools() -> None:
    """The programs the tutorial's commands use, besides Python's: skip without them, fail in CI."""
    for name in ("curl", "jq", "dig", "chromium"):
        require_binary(name)


@pytest.fixture
def storefront() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_context(viewport=DESKTOP).new_page()
        page.set_default_timeout(20_000)
        yield page
        browser.close()


@pytest.mark.timeout(420)  # about 2 minutes alone; room for a loaded machine
def test_the_tutorial_runs_top_to_bottom(tools: None, storefront: Page, tmp_path: Path) -> None:
    items = parse(TUTORIAL.read_text(encoding="utf-8"))
    steps = {item.step for item in items}
    assert any(s.startswith("4.3") for s in steps) and any(s.startswith("B.5") for s in steps), steps
    with system_up(tmp_path, edge="") as system:
        edge = system.topology.edge.url
        addresses = {
            default: urlsplit(system.topology.region(region).api_url).hostname or ""
            for region, default in DEFAULT_ADDRESSES.items()
        }

        def browser(action: str, argument: str) -> None:
            assert action == "flag", f"unknown browser step {action}"
            # What the reader does: reload the storefront and look at the header's region.
            storefront.goto(f"{edge}/#/bestsellers")
            storefront.reload()
            expect(storefront.locator("#region-name")).to_have_text(argument)

        work = tmp_path / "work"
        work.mkdir()
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null"}
        env.pop("BOOKSTORE_DATA_DIR", None)
        env.pop("BOOKSTORE_TOPOLOGY", None)
        runner = Runner(work, setup_lines(system), addresses, browser, env)
        runner.run(items)
        assert len(runner.done) == len(items)
