"""The aws CLI (awscli from PyPI, run with this interpreter) pointed at one test S3 server, path-style."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.s3_server import KEY, REGION, SECRET, S3Server


def aws(server: S3Server, home: Path, *args: str) -> str:
    """The output of an aws CLI command that must succeed."""
    done = run_aws(server.endpoint, home, *args)
    assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def aws_fails(server: S3Server, home: Path, *args: str) -> str:
    """The error output of an aws CLI command that must fail."""
    done = run_aws(server.endpoint, home, *args)
    assert done.returncode != 0, f"aws {' '.join(args)} succeeded:\n{done.stdout}"
    return done.stderr


def run_aws(endpoint: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An aws CLI command against the S3 API at `endpoint` with the test key pair; not checked."""
    pytest.importorskip("awscli", reason="the aws CLI (awscli from PyPI) is not installed")
    config = home / "aws-config"
    if not config.exists():
        config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }
    return subprocess.run(
        [sys.executable, "-m", "awscli", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
