"""A real webserver (gunicorn via ``start_in_background``) and a plain HTTP client for it.

The security tests talk to the server exactly as an attacker would: raw HTTP,
cookies replayed by hand, no Flask test client in between.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

from flowsched.web.server import start_in_background
from flowsched.web.users import create_token, create_user
from tests.servers import free_port, wait_for_port
from tests.web.conftest import PASSWORD, ROLES

STRONG_SECRET = "live-test-secret-5f0c9a7e1b3d42c8a6e9f1d0b7c4a2e3"
CONF_LIMIT = 4096


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """One browser-like cookie jar; never follows redirects."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    source: str = "127.0.0.1"  # any 127.x address: a distinct client to the server

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(self.source, 0)
        )
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read(4 * 1024 * 1024))
        finally:
            connection.close()
        for header in reply.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", path, form=form, **kwargs)

    def csrf(self, path: str = "/login") -> str:
        page = self.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, f"{path} carries a CSRF token: {page.status} {page.text[:300]}"
        return found.group(1)

    def login(self, username: str, password: str = PASSWORD, next_: str | None = None) -> Reply:
        form = {"username": username, "password": password, "csrf_token": self.csrf()}
        if next_ is not None:
            form["next"] = next_
        return self.post("/login", form)

    def logout(self) -> Reply:
        return self.post("/logout", {"csrf_token": self.csrf("/dags")})


@dataclass
class Live:
    port: int
    tokens: dict[str, str]

    def client(self, role: str | None = None) -> Client:
        client = Client(self.port)
        if role is not None:
            reply = client.login(role)
            assert reply.status == 302, reply.text
        return client

    def api(self, method: str, path: str, token: str, body: Any = None) -> Reply:
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return Client(self.port).request(method, "/api/v1" + path, headers=headers, body=data)


def start_live(home: Any, **webserver: str) -> Iterator[Live]:
    home.configure(
        core={"secret_key": STRONG_SECRET, "max_run_conf_size": str(CONF_LIMIT)},
        webserver={"login_failures_allowed": "3", "login_lock_seconds": "2", **webserver},
    )
    for role in ROLES:
        create_user(role, PASSWORD, role)
    tokens = {role: create_token(role, "tests") for role in ROLES}
    port = free_port()
    server = start_in_background(f"127.0.0.1:{port}", workers=1)
    try:
        wait_for_port(port, timeout=60, proc=server.process)
        yield Live(port, tokens)
    finally:
        server.stop()
