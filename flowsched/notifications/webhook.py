"""WebhookNotifier: a JSON POST of ``{"text": ...}``, which Slack and Mattermost
incoming webhooks (and most chat tools) accept as is."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from flowsched.exceptions import FlowschedError
from flowsched.notifications.basenotifier import DEFAULT_TEXT, BaseNotifier


class WebhookError(FlowschedError):
    """The webhook could not be reached or refused the message."""


class WebhookNotifier(BaseNotifier):
    """POST ``{"text": text, **extra_payload}`` to ``webhook_url`` or the URL of the
    connection ``webhook_conn_id`` (host with scheme, or ``schema`` + host + port,
    then ``extra["endpoint"]``; a password, if any, is appended as the hook's token)."""

    template_fields: Sequence[str] = ("text", "extra_payload")

    def __init__(
        self,
        text: str = DEFAULT_TEXT,
        *,
        webhook_url: str | None = None,
        webhook_conn_id: str | None = None,
        extra_payload: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if (webhook_url is None) == (webhook_conn_id is None):
            raise ValueError("WebhookNotifier needs exactly one of webhook_url, webhook_conn_id")
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise ValueError("WebhookNotifier: webhook_url must start with http:// or https://")
        self.text = text
        self.webhook_url = webhook_url
        self.webhook_conn_id = webhook_conn_id
        self.extra_payload = dict(extra_payload or {})
        self.timeout = float(timeout)

    def url(self) -> str:
        if self.webhook_url is not None:
            return self.webhook_url
        from flowsched.connection import Connection

        conn = Connection.get(str(self.webhook_conn_id))
        host = conn.host or ""
        if not host.startswith(("http://", "https://")):
            host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
        endpoint = str(conn.extra_dejson.get("endpoint", ""))
        url = host.rstrip("/") + ("/" + endpoint.lstrip("/") if endpoint else "")
        if conn.password:  # Slack-style: the token is the URL's last part
            url = url.rstrip("/") + "/" + conn.password
        return url

    def notify(self, context: dict[str, Any]) -> None:
        body = json.dumps({"text": self.text, **self.extra_payload}).encode()
        request = urllib.request.Request(
            self.url(), data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(65536)  # bounded: a reply is a status, not a download
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"webhook answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WebhookError(f"webhook unreachable: {exc}") from None
