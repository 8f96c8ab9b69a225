"""`python -m bookstore.cloud.package OUT.zip`: the Lambda package (the project and its runtime
dependencies, as Linux x86_64 wheels for the Lambda runtime's Python), its size printed.

pip does the work (`--platform --only-binary`, so wheels built for Lambda's Linux, whatever this
machine is); this module only names what goes in and zips it deterministically.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bookstore.cloud.settings import PYTHON_RUNTIME

ROOT = Path(__file__).resolve().parents[3]
# The project's extras the functions use (the AWS engines), and what they need beyond them.
EXTRAS = "aws,redis,mysql"
EXTRA = ("mangum>=0.17,<1",)
# Lambda's limit for a package's unzipped size.
UNZIPPED_LIMIT = 250 * 1024 * 1024
LEFT_OUT = ("__pycache__", ".dist-info/RECORD")


def build(out: Path, project: Path = ROOT) -> tuple[int, int]:
    """Build the zip at `out`; returns (zipped bytes, unzipped bytes)."""
    version = PYTHON_RUNTIME.removeprefix("python")
    with tempfile.TemporaryDirectory(prefix="bookstore-lambda-") as tmp:
        target = Path(tmp) / "package"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(target),
                "--platform",
                "manylinux2014_x86_64",
                "--implementation",
                "cp",
                "--python-version",
                version,
                "--only-binary=:all:",
                str(project),
                *EXTRA,
            ],
            check=True,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        unzipped = 0
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(target.rglob("*")):
                name = path.relative_to(target).as_posix()
                if path.is_dir() or any(part in name for part in LEFT_OUT):
                    continue
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                data = path.read_bytes()
                unzipped += len(data)
                archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return out.stat().st_size, unzipped


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the Lambda package of the Bookstore.")
    parser.add_argument("out", type=Path, help="the zip to write, e.g. build/lambda.zip")
    args = parser.parse_args()
    zipped, unzipped = build(args.out)
    verdict = "within" if unzipped <= UNZIPPED_LIMIT else "OVER"
    print(
        f"{args.out}: {zipped / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped "
        f"({verdict} Lambda's {UNZIPPED_LIMIT // (1024 * 1024)} MiB limit)"
    )
    if unzipped > UNZIPPED_LIMIT:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
