"""The local servers' one loop: a threading HTTP server on the loopback until interrupted."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve(handler: type[BaseHTTPRequestHandler] | Any, port: int) -> int:  # noqa: ANN401
    """Serve `handler` (a class, or a partial of one) on 127.0.0.1:`port`; 0 on Ctrl-C."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
