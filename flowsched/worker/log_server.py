"""The worker's log server: ``GET /log/<relative path>`` for the logs this worker wrote.

It runs as a thread of ``flowsched worker`` so it lives and dies with the
worker, and it only reads files: every request needs a token from
:mod:`flowsched.worker.log_tokens` (``Authorization: Bearer …``), and a path
that resolves outside ``logging.base_log_folder`` (``..``, a symlink out,
an absolute path) is refused even with a valid token. ``?offset=N`` returns
the file from byte N, which is how ``flowsched tasks log --follow`` tails.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from flowsched.worker.log_tokens import TokenRefused, verify

log = logging.getLogger("flowsched.log_server")

PREFIX = "/log/"
MAX_CHUNK = 16 * 1024 * 1024


class LogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], base_folder: Path, secret_key: str) -> None:
        self.base_folder = base_folder.resolve()
        self.secret_key = secret_key
        super().__init__(address, LogRequestHandler)


class LogRequestHandler(BaseHTTPRequestHandler):
    server: LogServer
    server_version = "flowsched-log-server"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        log.warning("refused %s from %s: %s", self.path, self.address_string(), reason)
        body = f"{reason}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not url.path.startswith(PREFIX):
            self._refuse(HTTPStatus.NOT_FOUND, "only /log/<path> is served")
            return
        relative = unquote(url.path[len(PREFIX) :])
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self._refuse(HTTPStatus.FORBIDDEN, "missing token")
            return
        try:
            verify(header[len("Bearer ") :].strip(), relative, self.server.secret_key)
        except TokenRefused as exc:
            self._refuse(HTTPStatus.FORBIDDEN, str(exc))
            return
        base = self.server.base_folder
        target = (base / relative).resolve()
        if not target.is_relative_to(base) or target == base:
            self._refuse(HTTPStatus.FORBIDDEN, "path is outside the log folder")
            return
        try:
            offset = int(parse_qs(url.query).get("offset", ["0"])[0])
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, "offset must be an integer")
            return
        try:
            with target.open("rb") as handle:
                handle.seek(max(0, offset))
                data = handle.read(MAX_CHUNK)
        except (FileNotFoundError, IsADirectoryError):
            self._refuse(HTTPStatus.NOT_FOUND, f"no log {relative} on this worker")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_log_server(host: str, port: int, base_folder: Path, secret_key: str) -> LogServer:
    """Listen now (so a taken port fails the worker's start) and serve in a thread."""
    base_folder.mkdir(parents=True, exist_ok=True)
    server = LogServer((host, port), base_folder, secret_key)
    thread = threading.Thread(target=server.serve_forever, name="log-server", daemon=True)
    thread.start()
    log.info("log server on http://%s:%s serving %s", host, port, server.base_folder)
    return server
