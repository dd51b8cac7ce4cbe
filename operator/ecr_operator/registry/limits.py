"""How long a registry may take and how much it may hand us: the bounds that keep a hostile or broken
upstream from holding a worker or growing memory.

Both are plain frozen dataclasses with defaults sized for real registries (Docker Hub, ghcr.io, quay.io,
ECR, distribution); pass your own to ``create_session`` / ``RegistryClient`` to change them. Exceeding a
bound raises ``DeadlineExceeded`` (time) or ``LimitExceeded`` (size/count), both ``RegistryError``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deadlines:
    """Seconds (and bytes per second) a registry gets.

    ``connect``: TCP connect plus TLS handshake (aiohttp ``connect``/``sock_connect``).
    ``read``: the longest silence while reading any response (aiohttp ``sock_read``, and enforced again
    by the client on blob streams).
    ``request``: a whole small exchange — HEADs, manifests, tag and referrer pages, token requests,
    upload sessions, manifest pushes — from the first byte sent to the last byte of the body read,
    authentication round trips and redirects included. A manifest trickled a byte a minute fails here.
    ``blob_min_rate`` over ``blob_window``: a blob stream has no total deadline (a layer may be large),
    but every ``blob_window`` seconds spent waiting for the source must bring at least
    ``blob_min_rate * blob_window`` bytes, else the stream fails; 0 turns the throughput floor off.
    """

    connect: float = 10.0
    # Generous on purpose: a registry may think a while after the last byte of a large blob upload (aiohttp
    # starts this clock only once the body is sent); trickles are caught by the two bounds below.
    read: float = 60.0
    request: float = 60.0
    blob_min_rate: float = 16 * 1024
    blob_window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "request", "blob_window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Deadlines.{name} must be a positive number of seconds")
        if not self.blob_min_rate >= 0:
            raise ValueError("Deadlines.blob_min_rate must be zero or more bytes per second")


@dataclass(frozen=True)
class Limits:
    """How much of a registry's answers the client accepts.

    ``max_tags``: distinct tags a listing may return (the listing fails beyond, it is not truncated:
    a truncated list would silently select other tags). ``max_tag_pages`` / ``max_referrer_pages``:
    pages a listing may follow. ``max_referrers``: referrers of one subject, and referrer manifests one
    copy visits in all. ``max_index_children``: distinct children of one image index (duplicates are
    copied once). ``max_index_depth``: indexes nested in indexes. ``max_blobs``: distinct blobs of one
    image (all its platforms).
    """

    max_tags: int = 10_000
    max_tag_pages: int = 100
    max_referrers: int = 1_000
    max_referrer_pages: int = 20
    max_index_children: int = 1_000
    max_index_depth: int = 4
    max_blobs: int = 10_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer")


DEFAULT_DEADLINES = Deadlines()
DEFAULT_LIMITS = Limits()
