"""Benchmarks of Cortado's request path (`make bench`)."""
