"""Benchmarks that run the real bot against the fakes (see bench/README.md)."""
