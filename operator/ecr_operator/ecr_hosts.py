"""ECR registry host names: the one pattern the operator recognises them by, and how one is built.

A private registry is ``<account>.dkr.ecr[-fips].<region>.amazonaws.com`` (``.amazonaws.com.cn`` in the
China regions). Settings validate registry host overrides with it, the mirror controller checks every
destination it pushes to with it, and ``ecr-operator mirror`` recognises ECR destinations with it.
"""

from __future__ import annotations

import re

ECR_HOST = re.compile(
    r"(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2,4}(?:-[a-z]+)+-[0-9]{1,2})"
    r"\.amazonaws\.com(?:\.cn)?"
)


def is_ecr_host(host: str) -> bool:
    """Whether ``host`` (no port) is an ECR registry host name."""
    return ECR_HOST.fullmatch(host) is not None


def ecr_host_region(host: str) -> str | None:
    """The region of an ECR registry host, else None."""
    match = ECR_HOST.fullmatch(host)
    return match["region"] if match else None


def ecr_host(account_id: str, region: str) -> str:
    """The registry host of an account in a region: ``123456789012.dkr.ecr.us-east-1.amazonaws.com``."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account_id}.dkr.ecr.{region}.{suffix}"
