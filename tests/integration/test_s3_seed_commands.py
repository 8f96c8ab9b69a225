"""The seed's S3 commands, as written, with the real aws CLI against a running `bookstore up`.

After `eval "$(bookstore aws-env eu-west-1)"` every command goes to the Ireland endpoint, including
those for the Singapore bucket, which Ireland forwards through the link.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bookstore.objectstore.setup import site_files
from tests.support.regions import System, system_up

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
IRELAND, SINGAPORE = "bookstore-seed-ireland", "bookstore-seed-singapore"
MIB = 1024 * 1024


def aws_env(system: System) -> dict[str, str]:
    """What `eval "$(bookstore aws-env eu-west-1)"` exports."""
    env = {}
    for line in system.cli("aws-env", EU).stdout.splitlines():
        assert line.startswith("export "), line
        variable, _, value = line.removeprefix("export ").partition("=")
        env[variable] = shlex.split(value)[0]
    return env


class Aws:
    """The aws CLI in a home of its own (no config, no credentials file), with the aws-env variables."""

    def __init__(self, system: System, home: Path) -> None:
        self.home = home
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "AWS_PAGER": "",
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
            **aws_env(system),
        }

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "aws"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args).stdout)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(0.2)


def test_the_seeds_commands_run_as_written_against_the_ireland_endpoint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "system").mkdir()
    with system_up(tmp_path / "system") as system:
        aws = Aws(system, home)
        assert aws.env["AWS_ENDPOINT_URL"] == system.topology.region(EU).s3_url

        for bucket, region in ((IRELAND, EU), (SINGAPORE, AP)):
            aws(
                "s3api",
                "create-bucket",
                "--bucket",
                bucket,
                "--region",
                region,
                "--create-bucket-configuration",
                f"LocationConstraint={region}",
            )
            aws(
                "s3api",
                "put-bucket-versioning",
                "--bucket",
                bucket,
                "--versioning-configuration",
                "Status=Enabled",
            )
        located = aws.json("s3api", "get-bucket-location", "--bucket", SINGAPORE)
        assert located["LocationConstraint"] == AP

        site = home / "site"
        (site / "covers").mkdir(parents=True)
        before = home / "before"
        before.mkdir()
        (before / "before-rule.txt").write_bytes(b"written before the replication rule")
        (before / "before-rule.bin").write_bytes(os.urandom(9 * MIB + 7))  # a multipart copy on sync
        aws("s3", "cp", str(before), f"s3://{IRELAND}/", "--recursive")

        (home / "replication.json").write_text(
            json.dumps(
                {
                    "Role": "arn:aws:iam::123456789012:role/bookstore-s3-replication",
                    "Rules": [
                        {
                            "Status": "Enabled",
                            "Priority": 1,
                            "DeleteMarkerReplication": {"Status": "Disabled"},
                            "Filter": {},
                            "Destination": {"Bucket": f"arn:aws:s3:::{SINGAPORE}"},
                        }
                    ],
                }
            )
        )
        aws(
            "s3api",
            "put-bucket-replication",
            "--bucket",
            IRELAND,
            "--replication-configuration",
            "file://replication.json",
        )
        aws("s3", "website", f"s3://{IRELAND}/", "--index-document", "index.html")
        assert aws.json("s3api", "get-bucket-website", "--bucket", IRELAND)["IndexDocument"] == {
            "Suffix": "index.html"
        }

        files = {
            "index.html": b"<h1>Bookstore</h1>",
            "covers/lotr.svg": b"<svg>lotr</svg>",
            "covers/\u00fcn\u00efcode name+plus.svg": b"<svg>unicode</svg>",
        }
        for key, data in files.items():
            (site / key).write_bytes(data)
        aws("s3", "cp", str(site), f"s3://{IRELAND}/", "--recursive")

        # What was written after the rule replicates by itself; what was there before does not.
        for key in files:
            head = wait_for(
                f"{key} replicated",
                partial(_replicated, aws, key),
            )
            assert head["ReplicationStatus"] == "REPLICA"
            source = aws.json("s3api", "head-object", "--bucket", IRELAND, "--key", key)
            assert source["VersionId"] == head["VersionId"] and source["ETag"] == head["ETag"]
            assert wait_for(f"{key} COMPLETED", partial(_completed, aws, key))
        listed = aws("s3", "ls", f"s3://{SINGAPORE}/", "--recursive").stdout
        assert "before-rule" not in listed

        aws("s3", "sync", f"s3://{IRELAND}", f"s3://{SINGAPORE}")
        assert aws("s3", "sync", f"s3://{IRELAND}", f"s3://{SINGAPORE}").stdout.strip() == ""
        for name in ("before-rule.txt", "before-rule.bin"):
            aws("s3", "cp", f"s3://{SINGAPORE}/{name}", str(home / f"copy-{name}"))
            assert (home / f"copy-{name}").read_bytes() == (before / name).read_bytes()
        buckets = aws("s3", "ls").stdout
        assert IRELAND in buckets and SINGAPORE in buckets

        # `bookstore up` made the storefront's buckets as the seed does (but delete markers replicate, so
        # a deleted file is not served on from Singapore), and published the covers.
        home_bucket, other = f"bookstore-web-{EU}", f"bookstore-web-{AP}"
        config = aws.json("s3api", "get-bucket-replication", "--bucket", home_bucket)
        [rule] = config["ReplicationConfiguration"]["Rules"]
        assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{other}"
        assert rule["DeleteMarkerReplication"] == {"Status": "Enabled"} and rule["Filter"] == {}
        for bucket in (home_bucket, other):
            assert aws.json("s3api", "get-bucket-versioning", "--bucket", bucket)["Status"] == "Enabled"
        wait_for(
            "the covers in Singapore",
            lambda: "bk-cook-001.svg" in aws("s3", "ls", f"s3://{other}/covers/").stdout,
        )
        again = system.cli("publish").stdout
        assert "0 uploaded" in again and f"{len(list(site_files()))} unchanged" in again


def _replicated(aws: Aws, key: str) -> dict[str, Any] | None:
    done = aws("s3api", "head-object", "--bucket", SINGAPORE, "--key", key, ok=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def _completed(aws: Aws, key: str) -> bool:
    head = aws.json("s3api", "head-object", "--bucket", IRELAND, "--key", key)
    return bool(head.get("ReplicationStatus") == "COMPLETED")
