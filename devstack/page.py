"""Static server for frontend/, answering /config.js with the local function URLs.

Any static host serves frontend/ as it is; deploy.sh writes config.js for the cloud. Locally
the URLs depend on the ports, so this server generates config.js instead of writing a file."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

from devstack.local_http import serve

FRONTEND = Path(__file__).resolve().parents[1] / "frontend"


def config_js(predict_url: str, gradcam_url: str | None, appcheck: dict | None = None) -> bytes:
    config = {"predictUrl": predict_url, "gradcamUrl": gradcam_url or ""}
    if appcheck:  # where the page obtains App Check tokens (frontend/appcheck.js)
        config["appCheck"] = appcheck
    return f"window.DERMCAM_CONFIG = {json.dumps(config)};\n".encode()


class PageHandler(SimpleHTTPRequestHandler):
    config: bytes = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?", 1)[0] == "/config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        super().do_GET()

    def end_headers(self) -> None:
        if not self.path.startswith("/config.js"):
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write("page: " + (format % args) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.page")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--predict-url", required=True)
    parser.add_argument("--gradcam-url", default="")
    parser.add_argument("--root", default=str(FRONTEND), help="the page's folder")
    parser.add_argument("--appcheck", help="JSON: how the page obtains App Check tokens")
    args = parser.parse_args(argv)
    handler = functools.partial(
        type(
            "Handler",
            (PageHandler,),
            {
                "config": config_js(
                    args.predict_url,
                    args.gradcam_url,
                    json.loads(args.appcheck) if args.appcheck else None,
                )
            },
        ),
        directory=args.root,
    )
    return serve(handler, args.port)


if __name__ == "__main__":
    sys.exit(main())
