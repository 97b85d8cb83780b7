"""SmtpNotifier with Airflow's arguments (airflow.providers.smtp.notifications.smtp).

Host, port, login and password come from an ``smtp`` connection; its extra takes
Airflow's SMTP keys: ``disable_ssl`` (default false: SMTP over TLS, port 465),
``disable_tls`` (default false: STARTTLS when not over SSL), ``timeout`` (30 s)
and ``from_email`` (the sender when the notifier names none).
"""

from __future__ import annotations

import mimetypes
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from flowsched.notifications.basenotifier import DEFAULT_TEXT, BaseNotifier

DEFAULT_SUBJECT = (
    "[flowsched] {% if ti %}{{ dag.dag_id }}.{{ ti.task_id }} {{ ti.state }}"
    "{% else %}{{ dag.dag_id }} run {{ dag_run.state }}{% endif %}: {{ run_id }}"
)


def _addresses(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    return [address.strip() for address in value if address and address.strip()]


class SmtpNotifier(BaseNotifier):
    template_fields: Sequence[str] = (
        "from_email",
        "to",
        "subject",
        "html_content",
        "files",
        "cc",
        "bcc",
        "custom_headers",
    )

    def __init__(
        self,
        from_email: str | None = None,
        to: str | Iterable[str] | None = None,
        subject: str | None = None,
        html_content: str | None = None,
        files: list[str] | None = None,
        cc: str | Iterable[str] | None = None,
        bcc: str | Iterable[str] | None = None,
        mime_subtype: str = "mixed",
        mime_charset: str = "utf-8",
        custom_headers: dict[str, Any] | None = None,
        smtp_conn_id: str = "smtp_default",
    ) -> None:
        if not _addresses(to):
            raise ValueError("SmtpNotifier needs at least one recipient (to=...)")
        self.from_email = from_email
        self.to = to if isinstance(to, str) else list(to or [])
        self.subject = subject or DEFAULT_SUBJECT
        self.html_content = html_content or f"<p>{DEFAULT_TEXT}</p>"
        self.files = list(files or [])
        self.cc = cc
        self.bcc = bcc
        self.mime_subtype = mime_subtype
        self.mime_charset = mime_charset
        self.custom_headers = dict(custom_headers or {})
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: dict[str, Any]) -> None:
        from flowsched.connection import Connection

        conn = Connection.get(self.smtp_conn_id)
        extra = conn.extra_dejson
        sender = self.from_email or extra.get("from_email") or conn.login
        if not sender or "@" not in str(sender):
            raise ValueError(
                f"SmtpNotifier: no sender: give from_email, or 'from_email' in the extra of "
                f"connection '{self.smtp_conn_id}'"
            )
        message = self._message(str(sender))
        use_ssl = not extra.get("disable_ssl", False)
        timeout = float(extra.get("timeout", 30))
        host = conn.host or "localhost"
        port = conn.port or (465 if use_ssl else 587)
        context_ssl = ssl.create_default_context()
        client: smtplib.SMTP
        if use_ssl:
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context_ssl)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if not use_ssl and not extra.get("disable_tls", False):
                client.starttls(context=context_ssl)
            if conn.login and conn.password:
                client.login(conn.login, conn.password)
            recipients = _addresses(self.to) + _addresses(self.cc) + _addresses(self.bcc)
            client.send_message(message, from_addr=str(sender), to_addrs=recipients)

    def _message(self, sender: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(_addresses(self.to))
        if _addresses(self.cc):
            message["Cc"] = ", ".join(_addresses(self.cc))
        message["Subject"] = " ".join(str(self.subject).split())  # one header line
        for name, value in self.custom_headers.items():
            message[name] = str(value)
        message.set_content(str(self.html_content), subtype="html", charset=self.mime_charset)
        for path in self.files:
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            maintype, subtype = kind.split("/", 1)
            message.add_attachment(
                Path(path).read_bytes(),
                maintype=maintype,
                subtype=subtype,
                filename=Path(path).name,
            )
        return message
