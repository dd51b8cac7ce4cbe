"""OCI distribution client and digest-exact copy engine (aiohttp only: no kopf, no boto3).

Import from the modules themselves: this package re-exports nothing, so importing a pure value module
(``errors``, ``reference``, ``platforms``, ``results``...) from ``reconcile/`` does not load aiohttp.
"""
