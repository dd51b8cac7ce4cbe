"""Benchmarks that measure ecr-operator against peer tools in the same run (``make bench``)."""
