"""Notifiers against a real SMTP server (aiosmtpd) and a real HTTP receiver, each in its
own process; as callbacks of a real run, and as the cluster's [alerts] on_failure."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest

from flowsched import SmtpNotifier, WebhookNotifier, operations
from flowsched.callback_runner import run_pending_callbacks
from flowsched.exceptions import ConfigError
from flowsched.notifications import BaseNotifier
from tests.certificates import self_signed
from tests.harness import drive, parse, run_finished, run_state, wait_for
from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def _receiver(kind: str, folder: Path, *extra: str) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = open(folder.parent / f"{kind}-receiver.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.alert_receivers", kind, str(port), str(folder), *extra],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30, proc=process)
        yield port, folder
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture
def smtp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real SMTP server requiring a login, and connection ``smtp_test`` pointing at it."""
    for port, folder in _receiver("smtp", tmp_path / "mail"):
        conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "login": "alerts",
            "password": "s3cret",
            "extra": {
                "disable_ssl": True,
                "disable_tls": True,
                "timeout": 10,
                "from_email": "alerts@example.com",
            },
        }
        monkeypatch.setenv("FLOWSCHED_CONN_SMTP_TEST", json.dumps(conn))
        yield folder


@pytest.fixture
def http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Path]]:
    """A real HTTP receiver, and connection ``chat`` pointing at its /hooks/team path."""
    for port, folder in _receiver("http", tmp_path / "posts"):
        conn = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": port,
            "schema": "http",
            "extra": {"endpoint": "hooks/team"},
        }
        monkeypatch.setenv("FLOWSCHED_CONN_CHAT", json.dumps(conn))
        yield port, folder


def mails(folder: Path) -> list:
    return [
        message_from_bytes(path.read_bytes(), policy=default_policy)
        for path in sorted(folder.glob("*.eml"))
    ]


def posts(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


NOTIFIED = """
from datetime import datetime
from flowsched import DAG, PythonOperator, SmtpNotifier, WebhookNotifier

def fail():
    raise ValueError("disk full")

mail = SmtpNotifier(
    from_email="flowsched@example.com",
    to=["ops@example.com"],
    cc="lead@example.com",
    subject="{{ dag.dag_id }}.{{ ti.task_id }} {{ ti.state }} on {{ ds }}",
    html_content="<p>try {{ ti.try_number }}: {{ exception }}</p>",
    smtp_conn_id="smtp_test",
)
with DAG("notified", start_date=datetime(2026, 1, 1),
         default_args={"on_failure_callback": mail},
         on_failure_callback=WebhookNotifier(
             text="run {{ run_id }} of {{ dag.dag_id }} failed: {{ reason }}",
             webhook_conn_id="chat")) as dag:
    PythonOperator(task_id="load", python_callable=fail)
"""


def test_notifiers_as_callbacks_send_templated_mail_and_webhook_posts(
    sqlite_home, smtp_server, http_server
):
    _, posted = http_server
    sqlite_home.write_dag("notified.py", NOTIFIED)
    parse()
    run = operations.trigger_dag("notified")
    drive(run_finished("notified"), timeout=60)
    # The task's notifier ran on the worker, in the try's process.
    wait_for(lambda: len(mails(smtp_server)) == 1, timeout=15)
    (mail,) = mails(smtp_server)
    ds = run.logical_date.astimezone(sqlite_home_zone()).strftime("%Y-%m-%d")
    assert mail["Subject"] == f"notified.load failed on {ds}"
    assert mail["From"] == "flowsched@example.com"
    assert mail["To"] == "ops@example.com" and mail["Cc"] == "lead@example.com"
    assert mail["X-Envelope-To"] == "ops@example.com, lead@example.com"
    body = mail.get_body(("html",)).get_content()
    assert "try 1: disk full" in body
    # The DAG's notifier: by the callback runner, from the run's request.
    assert posts(posted) == []
    assert run_pending_callbacks() == 1
    (post,) = posts(posted)
    assert post["path"] == "/hooks/team"
    assert post["content_type"] == "application/json"
    assert post["body"] == {"text": f"run {run.run_id} of notified failed: task_failure"}


def sqlite_home_zone():
    from flowsched.timezone import default_timezone

    return default_timezone()


FAILING_WITHOUT_CALLBACKS = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("plain_fail", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="broken", bash_command="exit 3")
with DAG("plain_ok", start_date=datetime(2026, 1, 1)) as ok:
    BashOperator(task_id="fine", bash_command="true")
"""


def test_cluster_fallback_tells_of_every_failed_run_without_editing_dags(
    sqlite_home, smtp_server, http_server
):
    port, posted = http_server
    sqlite_home.configure(
        alerts={
            "on_failure": f"webhook:http://127.0.0.1:{port}/hooks/ops "
            "smtp:smtp_test:ops@example.com,oncall@example.com"
        }
    )
    sqlite_home.write_dag("plain.py", FAILING_WITHOUT_CALLBACKS)
    parse()
    failed = operations.trigger_dag("plain_fail")
    operations.trigger_dag("plain_ok")
    drive(lambda: run_finished("plain_fail")() and run_finished("plain_ok")(), timeout=60)
    assert run_state("plain_fail") == "failed" and run_state("plain_ok") == "success"
    assert run_pending_callbacks() == 1  # the failed run only
    (post,) = posts(posted)
    assert post["path"] == "/hooks/ops"
    text = post["body"]["text"]
    assert "plain_fail" in text and failed.run_id in text and "task_failure" in text
    (mail,) = mails(smtp_server)
    assert mail["X-Envelope-To"] == "ops@example.com, oncall@example.com"
    assert mail["From"] == "alerts@example.com"  # the connection's from_email
    assert "plain_fail" in mail["Subject"] and "failed" in mail["Subject"]


def test_a_failing_notifier_is_logged_not_raised(http_server, caplog):
    port, posted = http_server
    notifier = WebhookNotifier(text="{{ greeting }}", webhook_url=f"http://127.0.0.1:{port}/fail")
    with caplog.at_level(logging.ERROR, logger="flowsched.notifications"):
        notifier({"greeting": "hello", "dag": None})
    assert [post["body"] for post in posts(posted)] == [{"text": "hello"}]
    assert "webhook answered HTTP 500" in caplog.text
    # The instance keeps its template for the next call.
    assert notifier.text == "{{ greeting }}"
    assert isinstance(notifier, BaseNotifier)


def test_bad_alert_settings_are_refused_with_what_is_wrong(sqlite_home, tmp_path):
    with pytest.raises(ConfigError, match=r"on_failure.*item 2 \('pager:...'\).*unknown kind"):
        sqlite_home.configure(alerts={"on_failure": "webhook:https://x.example/h pager:123"})
    with pytest.raises(ConfigError, match=r"item 1 \('smtp:...'\).*smtp:<conn_id>:<to>"):
        sqlite_home.configure(alerts={"on_failure": "smtp:smtp_default"})
    sqlite_home.configure(alerts={"on_failure": ""})
    with pytest.raises(ValueError, match="at least one recipient"):
        SmtpNotifier(smtp_conn_id="smtp_test")
    sqlite_home.write_dag(
        "bad_callback.py",
        """
        from datetime import datetime
        from flowsched import DAG, BashOperator
        with DAG("bad_cb", start_date=datetime(2026, 1, 1)) as dag:
            BashOperator(task_id="t", bash_command="true", on_failure_callback="page me")
        """,
    )
    from flowsched.dag_processor import process_folder

    (error,) = process_folder().errors
    assert "task 't': on_failure_callback must be a callable or a list of callables" in error


def test_smtp_notifier_uses_starttls_and_login_and_verifies_the_certificate(
    tmp_path, monkeypatch, caplog
):
    cert, key = self_signed(tmp_path, "smtp")
    for port, folder in _receiver("smtp", tmp_path / "tls-mail", str(cert), str(key)):
        conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "login": "alerts",
            "password": "s3cret",
            "extra": {"disable_ssl": True, "timeout": 10},  # STARTTLS (disable_tls unset)
        }
        monkeypatch.setenv("FLOWSCHED_CONN_SMTP_TLS", json.dumps(conn))
        notifier = SmtpNotifier(
            from_email="flowsched@example.com",
            to="ops@example.com",
            subject="{{ what }} over TLS",
            html_content="<p>{{ what }}</p>",
            smtp_conn_id="smtp_tls",
        )
        # Not trusted yet: refused, logged, nothing sent.
        with caplog.at_level(logging.ERROR, logger="flowsched.notifications"):
            notifier({"what": "untrusted", "dag": None})
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        assert mails(folder) == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        notifier({"what": "trusted", "dag": None})  # returns once the server said 250
        (mail,) = mails(folder)
        assert mail["Subject"] == "trusted over TLS"


def test_webhook_connection_keeps_the_token_in_its_password(http_server, monkeypatch):
    port, posted = http_server
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{port}/services", "password": "T0K"}
    monkeypatch.setenv("FLOWSCHED_CONN_SLACKISH", json.dumps(conn))
    WebhookNotifier(
        text="{{ n }} rows", webhook_conn_id="slackish", extra_payload={"channel": "#{{ c }}"}
    )({"n": 3, "c": "ops", "dag": None})
    (post,) = posts(posted)
    assert post["path"] == "/services/T0K"
    assert post["body"] == {"text": "3 rows", "channel": "#ops"}
