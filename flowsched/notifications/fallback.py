"""``[alerts] on_failure``: notifiers the callback runner tells of every failed run.

The value is a space-separated list of items:

- ``webhook:<url>`` (an http:// or https:// URL) -> :class:`WebhookNotifier`
- ``webhook-conn:<conn_id>`` -> :class:`WebhookNotifier` with that connection
- ``smtp:<conn_id>:<to>[,<to>...]`` -> :class:`SmtpNotifier` through that connection
"""

from __future__ import annotations

from flowsched.notifications.basenotifier import BaseNotifier


def parse_fallback(raw: str) -> list[BaseNotifier]:
    """The notifiers ``raw`` names; ValueError naming the bad item (not its secret parts)."""
    from flowsched.notifications.smtp import SmtpNotifier
    from flowsched.notifications.webhook import WebhookNotifier

    notifiers: list[BaseNotifier] = []
    for number, item in enumerate(raw.split(), start=1):
        kind, _, rest = item.partition(":")
        where = f"item {number} ('{kind}:...')"
        if kind == "webhook":
            if not rest.startswith(("http://", "https://")):
                raise ValueError(f"{where}: expected webhook:http(s)://...")
            notifiers.append(WebhookNotifier(webhook_url=rest))
        elif kind == "webhook-conn":
            if not rest:
                raise ValueError(f"{where}: expected webhook-conn:<conn_id>")
            notifiers.append(WebhookNotifier(webhook_conn_id=rest))
        elif kind == "smtp":
            conn_id, _, to = rest.partition(":")
            if not conn_id or not to.strip(","):
                raise ValueError(f"{where}: expected smtp:<conn_id>:<to>[,<to>...]")
            notifiers.append(SmtpNotifier(to=to, smtp_conn_id=conn_id))
        else:
            raise ValueError(f"{where}: unknown kind '{kind}' (known: webhook, webhook-conn, smtp)")
    return notifiers
