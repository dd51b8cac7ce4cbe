"""The threaded HTTPS server the harness's own registries (token issuer, hostile registry) are built on."""

from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class TlsThreadingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer on loopback speaking TLS with the harness's certificate."""

    daemon_threads = True

    def __init__(
        self, port: int, handler: type[BaseHTTPRequestHandler], tls_cert: Path, tls_key: Path
    ) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(str(tls_cert), str(tls_key))

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the per-connection thread: a client stalling mid-handshake blocks only itself.
        try:
            tls_socket = self._tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls_socket, client_address)
        except (ssl.SSLError, OSError):
            pass  # the client went away mid-request: nothing to answer
        finally:
            tls_socket.close()  # wrap_socket detached ``request``, so the server's own close won't reach it
