"""AWS test doubles' environment: test credentials only, nothing of the machine's AWS set-up leaking in."""

from __future__ import annotations

from pathlib import Path

import pytest

# What would point boto3 elsewhere than the test double, or at someone's real account.
_MACHINE_SETTINGS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
)


def fake_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """Test credentials, no config or credentials file, no profile or endpoint; then `extra` variables."""
    for name in _MACHINE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        **extra,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
