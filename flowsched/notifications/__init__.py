"""Notifiers: callables that take a callback's context and tell people (Airflow 2.6+).

Use an instance wherever a callback goes::

    on_failure_callback=SmtpNotifier(to="ops@example.com", smtp_conn_id="smtp_default")
"""

from flowsched.notifications.basenotifier import BaseNotifier
from flowsched.notifications.smtp import SmtpNotifier
from flowsched.notifications.webhook import WebhookNotifier

__all__ = ["BaseNotifier", "SmtpNotifier", "WebhookNotifier"]
