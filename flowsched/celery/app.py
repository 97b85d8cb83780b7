"""The Celery application that flowsched's scheduler, workers and Flower share.

Importable as ``flowsched.celery.app`` so Celery's own tools work
against a flowsched cluster, e.g. the rolling upgrade's
``celery -A flowsched.celery.app inspect ping -d NODENAME``. The
module attribute ``app`` is built on first access from the flowsched config,
so importing this module never reads a config file by itself.

Settings that matter, and why:

* JSON only, in and out. Nothing is ever unpickled, so a worker has no
  reason to run as root, nor to set Celery's force-root switch.
* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acked
  after its try ran, so a worker that dies loses nothing. A redelivered
  duplicate is harmless: ``claim_try`` refuses a try that is not queued.
* ``visibility_timeout`` from ``[celery] visibility_timeout``: Redis
  redelivers a message unacked for that long, so it must exceed the longest
  ``execution_timeout``.
* prefetch 1: a worker reserves only what it can start, so a long task does
  not hold back queued ones another worker could take.
* ``[celery] ssl_active``: broker and result backend over TLS, the
  server's certificate checked against ``ssl_cacert`` (:mod:`flowsched.tls`).
* long-running tries are not cancelled when the broker connection drops:
  they keep heartbeating to the database and record their own result.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from flowsched.config import Config, get_config
from flowsched.tls import broker_ssl

TASK_NAME = "flowsched.run_workload"


def celery_settings(conf: Config) -> dict[str, Any]:
    """Celery settings derived from the flowsched config (see the module docstring)."""
    tls = broker_ssl(conf)
    return {
        "broker_use_ssl": tls,
        "redis_backend_use_ssl": tls,
        "broker_url": conf.celery.broker_url,
        "result_backend": conf.celery.result_backend or None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": conf.celery.worker_concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": True,
        "task_default_queue": conf.celery.default_queue,
        "task_create_missing_queues": True,
        "broker_transport_options": {"visibility_timeout": conf.celery.visibility_timeout},
        "broker_connection_retry_on_startup": True,
        # Retry forever with Celery's backoff: a worker that gives up becomes a
        # systemd crash loop, and one that waits resumes as soon as Redis is back.
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 5,
        "enable_utc": True,
    }


def make_app(conf: Config | None = None) -> Celery:
    """A Celery app for this config, with flowsched's one task and remote commands."""
    from flowsched.celery import control  # registers flowsched_info for `workers`
    from flowsched.celery.task import run_workload

    del control
    app = Celery("flowsched", set_as_current=False)
    app.conf.update(celery_settings(conf or get_config()))
    app.task(name=TASK_NAME, bind=True)(run_workload)
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``app`` is created on first use, for ``celery -A flowsched.celery.app``."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
