"""Dependencies the code relies on without importing them itself."""

from __future__ import annotations

import importlib.util


def test_sniffio_is_installed_so_httpcore_does_not_fail_an_import_on_every_async_request() -> None:
    # httpcore's current_async_library() tries `import sniffio` each time one of its locks or events is
    # first used: four times per request. Without it, each try is a failed import that scans sys.path.
    assert importlib.util.find_spec("sniffio") is not None
