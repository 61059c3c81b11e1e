"""Benchmarks: deploy latency and the cost of deploying mid-migration, measured, not asserted."""
