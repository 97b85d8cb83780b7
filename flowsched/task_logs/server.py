"""The worker's log server: ``GET /log/<relative path>`` for the logs this worker wrote.

It runs as a thread of ``flowsched worker`` so it lives and dies with the
worker, and it only reads files: every request needs a token from
:mod:`flowsched.task_logs.tokens` (``Authorization: Bearer …``), and a path
that resolves outside ``logging.base_log_folder`` (``..``, a symlink out,
an absolute path, a symlink, anything but a regular file) is refused even
with a valid token: files are opened through :mod:`flowsched.task_logs.files`.

``?offset=N`` answers the file from byte N (``&length=M``: at most M bytes),
which is how ``flowsched tasks log --follow`` tails; ``?tail=M`` answers the
last M bytes from the start of a line, which is what pages show. The body is
streamed in chunks, and ``X-Log-Size``/``X-Log-Offset`` give the file's size
and where the body starts in it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flowsched.task_logs.files import LogRefused, file_size, iter_chunks, open_log, tail_start
from flowsched.task_logs.tokens import TokenRefused, verify

log = logging.getLogger("flowsched.log_server")

PREFIX = "/log/"


HANDSHAKE_TIMEOUT = 10.0


class LogServer(ThreadingHTTPServer):
    """Serves each connection in its own thread; with ``tls``, HTTPS only.

    The TLS handshake runs in the connection's thread (not in ``accept``), so
    a client that connects and stays silent holds back no other client.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        base_folder: Path,
        secret_key: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base_folder = base_folder.resolve()
        self.secret_key = secret_key
        self.tls = tls
        super().__init__(address, LogRequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is None:
            return sock, address
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused handshake (plain HTTP, an unknown CA) is one line, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, OSError)):
            log.warning("connection from %s failed: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)


class LogRequestHandler(BaseHTTPRequestHandler):
    server: LogServer
    server_version = "flowsched-log-server"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
        super().setup()

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
        query = parse_qs(url.query)
        try:
            numbers = {
                key: int(query[key][0]) for key in ("offset", "length", "tail") if key in query
            }
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, "offset, length and tail must be integers")
            return
        if any(value < 0 for value in numbers.values()):
            self._refuse(HTTPStatus.BAD_REQUEST, "offset, length and tail cannot be negative")
            return
        try:
            handle = open_log(relative, self.server.base_folder)
        except LogRefused as exc:
            self._refuse(HTTPStatus.FORBIDDEN, str(exc).replace(str(self.server.base_folder), "…"))
            return
        except FileNotFoundError:
            self._refuse(HTTPStatus.NOT_FOUND, f"no log {relative} on this worker")
            return
        with handle:
            if "tail" in numbers:
                start, size = tail_start(handle, numbers["tail"])
            else:
                size = file_size(handle)
                start = min(numbers.get("offset", 0), size)
            end = size if "length" not in numbers else min(size, start + numbers["length"])
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(end - start))
            self.send_header("X-Log-Size", str(size))
            self.send_header("X-Log-Offset", str(start))
            self.end_headers()
            try:
                for chunk in iter_chunks(handle, start, end):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("%s went away while reading %s", self.address_string(), relative)
            # A log truncated meanwhile sent fewer bytes than announced: close, do not pad.
            self.close_connection = True


def start_log_server(
    host: str,
    port: int,
    base_folder: Path,
    secret_key: str,
    tls: ssl.SSLContext | None = None,
) -> LogServer:
    """Listen now (so a taken port fails the worker's start) and serve in a thread.

    With ``tls`` the listening socket is wrapped, so every connection is HTTPS
    and a plain-HTTP client gets no log (its handshake fails).
    """
    base_folder.mkdir(parents=True, exist_ok=True)
    server = LogServer((host, port), base_folder, secret_key, tls)
    thread = threading.Thread(target=server.serve_forever, name="log-server", daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    log.info("log server on %s://%s:%s serving %s", scheme, host, port, server.base_folder)
    return server
