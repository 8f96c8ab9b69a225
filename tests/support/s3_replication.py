"""S3 replication rules for tests: one enabled rule to a destination bucket, put on a source bucket."""

from __future__ import annotations

from typing import Any


def rule(destination: str, *, delete_markers: str = "Disabled", priority: int = 1) -> dict[str, Any]:
    """An enabled rule that replicates every key to bucket `destination`."""
    return {
        "Status": "Enabled",
        "Priority": priority,
        "DeleteMarkerReplication": {"Status": delete_markers},
        "Filter": {},
        "Destination": {"Bucket": f"arn:aws:s3:::{destination}"},
    }


def replicate(s3: Any, source: str, destination: str, *, delete_markers: str = "Disabled") -> None:
    """Replicate bucket `source` to bucket `destination` (both versioned), through the client `s3`."""
    s3.put_bucket_replication(
        Bucket=source,
        ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/bookstore-s3-replication",
            "Rules": [rule(destination, delete_markers=delete_markers)],
        },
    )
