"""The workers page's data: live Celery nodes when the cluster runs Celery.

The inspection itself belongs to the distributed-execution code
(``flowsched.celery.inspect.list_workers``); this module only decides whether
to ask, and turns every way of failing into a sentence for the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flowsched.config import get_config

log = logging.getLogger(__name__)


@dataclass
class WorkersView:
    executor: str
    workers: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None
    flower_url: str = ""

    @property
    def using_celery(self) -> bool:
        return self.executor == "celery"


def active_count(worker: dict[str, Any]) -> int:
    active = worker.get("active")
    if isinstance(active, int):
        return active
    return len(active) if isinstance(active, list | tuple) else 0


def workers_view() -> WorkersView:
    conf = get_config()
    view = WorkersView(executor=conf.core.executor, flower_url=conf.webserver.flower_url)
    if not view.using_celery:
        view.message = (
            f"Not using Celery: core.executor = {conf.core.executor}, "
            "tasks run on the scheduler's host."
        )
        return view
    try:
        from flowsched.celery.inspect import list_workers
    except ImportError as exc:
        view.message = f"Worker inspection is not available in this installation ({exc})."
        return view
    try:
        view.workers = sorted(list_workers(), key=lambda w: str(w.get("nodename", "")))
    except Exception as exc:  # the broker may be down: say so instead of failing the page
        log.warning("listing Celery workers failed: %s", exc)
        view.message = f"Could not reach the Celery workers through the broker: {exc}"
        return view
    if not view.workers:
        view.message = "No Celery worker answered: none is running, or the broker is unreachable."
    return view
