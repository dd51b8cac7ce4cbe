"""The local test world (Kubernetes control plane, moto, registries) shared by tests and ``make demo``.

Kept import-free: its server modules run as ``python -m ecr_sandbox.<module>`` subprocesses.
"""
