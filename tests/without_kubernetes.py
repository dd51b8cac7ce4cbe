"""A ``python -c`` prelude that makes the ``kubernetes`` package unimportable, as in the operator's image
(the Dockerfile installs product dependencies only). The dev venv may still have it installed, and kopf
imports it whenever it can (to recognise its model objects); under this prelude kopf takes it as absent,
while any import of it by the product fails the script."""

PRELUDE = """
import sys

class _NoKubernetes:
    def find_spec(self, name, path=None, target=None):
        if name == "kubernetes" or name.startswith("kubernetes."):
            raise ModuleNotFoundError(f"No module named {name!r} (absent from the operator image)", name=name)
        return None

sys.meta_path.insert(0, _NoKubernetes())
"""
