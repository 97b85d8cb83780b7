"""Serving a component's registry at ``/metrics`` on its own port."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError

log = logging.getLogger(__name__)


def component_registry() -> CollectorRegistry:
    """A registry for one component, with its main process's ``process_*`` figures
    (CPU, memory, open files): a leak shows on the dashboard before it bites."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


@dataclass
class MetricsServer:
    """A running /metrics endpoint (a daemon thread); ``stop()`` frees its port."""

    server: Any
    thread: Any
    host: str
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(registry: CollectorRegistry, component: str) -> MetricsServer | None:
    """Serve ``registry`` on ``[metrics] <component>_port``; None when Prometheus is off.

    A port that cannot be bound stops the component at start with the setting named,
    rather than leaving it running unobserved.
    """
    conf = get_config().metrics
    if not conf.prometheus_on:
        return None
    host, port = conf.prometheus_host, getattr(conf, f"{component}_port")
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise FlowschedError(
            f"{component} cannot serve metrics on {host}:{port} "
            f"([metrics] {component}_port): {os.strerror(exc.errno) if exc.errno else exc}"
        ) from None
    log.info("%s metrics at http://%s:%s/metrics", component, host, port)
    return MetricsServer(server, thread, host, port)
