"""The object store: its port, S3 errors, bucket configurations, and the S3-compatible HTTP API (app.py).

Importing this package pulls in no web framework: storage adapters import `port`, `errors` and `configs`;
only `app` (and `sigv4`, `documents`) belong to the HTTP entrypoint.
"""
