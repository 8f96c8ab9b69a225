"""Benchmarks behind `make bench`: each module measures figures, __main__ writes docs/performance.md."""
