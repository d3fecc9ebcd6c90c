"""Benchmarks of palm on this machine (network speed, input pipeline, service load test) as library functions."""
