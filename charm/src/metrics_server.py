#!/usr/bin/python3
"""The charm's metrics endpoint: serves the exposition the charm's hooks write, to a client
that authenticates (docs/security.md, "Listening ports").

Standard library only: systemd runs it with the system's Python as ``nobody``
(``metrics_service.py``), apart from the charm's venv. It binds the address of its
configuration (loopback: the subordinate COS agent scrapes from the same machine),
answers ``GET /metrics`` with HTTP basic authentication and nothing else. The
configuration holds the SHA-256 of the password, never the password (it is random,
256 bits: a plain hash suffices, no guessing reaches it); the comparison is constant-time.
The exposition is read from its file at each request: the hooks replace it atomically.

    metrics_server.py CONFIG.json
    CONFIG.json: {"host": "127.0.0.1", "port": 9856, "user": "cos-agent",
                  "password_sha256": "<hex>", "exposition": "/path/metrics.prom"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("pgbackups-metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REALM = "pgbackups metrics"
MAX_HEADER = 1024  # an Authorization header longer than this is not ours


def password_sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class Config:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.host = str(raw["host"])
        self.port = int(raw["port"])
        self.user = str(raw["user"])
        self.password_sha256 = str(raw["password_sha256"])
        self.exposition = Path(str(raw["exposition"]))

    @classmethod
    def read(cls, path: str) -> Config:
        return cls(json.loads(Path(path).read_text()))


def authorised(header: str | None, config: Config) -> bool:
    """Whether an ``Authorization`` header carries this endpoint's user and password."""
    if not header or len(header) > MAX_HEADER:
        return False
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return False
    if not sep:
        return False
    # Both compared, always: no early exit that tells a right user from a wrong one.
    user_ok = hmac.compare_digest(user.encode(), config.user.encode())
    password_ok = hmac.compare_digest(password_sha256(password), config.password_sha256)
    return user_ok and password_ok


def make_handler(config: Config) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgbackups-metrics"
        sys_version = ""

        def do_GET(self) -> None:
            if not authorised(self.headers.get("Authorization"), config):
                self._send(401, b"authentication required\n", authenticate=True)
                return
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, b"not found\n")
                return
            try:
                body = config.exposition.read_bytes()
            except OSError:
                # Before the first collection: no samples, not an error the agent retries.
                body = b""
            self._send(200, body)

        def _send(self, code: int, body: bytes, *, authenticate: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            if authenticate:
                self.send_header("WWW-Authenticate", f'Basic realm="{REALM}"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # No request lines in the journal every scrape; failures still are.
            if args and str(args[1] if len(args) > 1 else "").startswith(("4", "5")):
                log.warning("%s %s", self.address_string(), format % args)

    return Handler


def make_server(config: Config) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((config.host, config.port), make_handler(config))
    server.daemon_threads = True
    return server


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if len(argv) != 2:
        print("usage: metrics_server.py CONFIG.json", file=sys.stderr)
        return 2
    config = Config.read(argv[1])
    server = make_server(config)
    log.info("serving /metrics on %s:%s", config.host, config.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
