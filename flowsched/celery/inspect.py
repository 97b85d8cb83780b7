"""Live workers, as the webserver and ``flowsched workers`` show them."""

from __future__ import annotations

from typing import Any

from celery import Celery


def list_workers(app: Celery | None = None, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every worker that answers within ``timeout``, sorted by nodename.

    Each entry: ``nodename``, ``hostname``, ``version``, ``queues`` (list),
    ``active`` (number of running tries), ``active_tasks`` (their names) and
    ``concurrency``. An unreachable broker raises kombu's ``OperationalError``.
    """
    if app is None:
        from flowsched.celery.app import make_app

        app = make_app()
    replies = app.control.broadcast("flowsched_info", reply=True, timeout=timeout) or []
    workers: list[dict[str, Any]] = []
    for reply in replies:
        for nodename, info in reply.items():
            if not isinstance(info, dict) or "hostname" not in info:
                # A worker of another app on the same broker, or an error reply.
                continue
            workers.append(
                {
                    "nodename": nodename,
                    "hostname": info["hostname"],
                    "version": info.get("version"),
                    "queues": list(info.get("queues") or []),
                    "active": len(info.get("active") or []),
                    "active_tasks": list(info.get("active") or []),
                    "concurrency": info.get("concurrency"),
                }
            )
    return sorted(workers, key=lambda worker: worker["nodename"])
