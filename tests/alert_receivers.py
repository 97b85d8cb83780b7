"""Real SMTP and HTTP receivers for the alert tests, each run as its own process:

    python -m tests.alert_receivers smtp|http PORT FOLDER [CERT KEY]

Each message received is written to FOLDER as one file (``<n>.eml`` / ``<n>.json``).
The SMTP server requires login ``alerts`` / ``s3cret``; given a certificate and key,
it also requires STARTTLS before the login.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COUNTER = itertools.count(1)


def serve_smtp(port: int, folder: Path, cert: str | None = None, key: str | None = None) -> None:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            path = folder / f"{next(COUNTER)}.eml"
            header = f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
            path.write_bytes(header.encode() + envelope.original_content)
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login == b"alerts" and auth_data.password == b"s3cret"
        )
        return AuthResult(success=ok)

    tls: dict = {"auth_require_tls": False}
    if cert and key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        tls = {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_required=True,
        **tls,
    )
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def serve_http(port: int, folder: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length", 0)), 1 << 20)
            body = self.rfile.read(length)
            record = {
                "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "body": json.loads(body),
            }
            (folder / f"{next(COUNTER)}.json").write_text(json.dumps(record))
            status = 500 if self.path.endswith("/fail") else 200
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    kind, port, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "smtp":
        serve_smtp(port, folder, *sys.argv[4:6])
    else:
        serve_http(port, folder)
