"""Adapters of the ports, one sub-package per engine."""
