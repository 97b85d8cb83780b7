"""StatsD output under Airflow's metric names, for dashboards built on Airflow's.

The StatsD line protocol over UDP (``name:value|c``, ``|g``, ``|ms``): sending
never blocks nor fails the caller; a datagram nobody receives is simply lost,
which is StatsD's contract.
"""

from __future__ import annotations

import logging
import re
import socket

from flowsched.config import Config

log = logging.getLogger(__name__)

# StatsD names are dot-separated; anything else in an id would split or break a name.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-.]")


def safe_name(part: str) -> str:
    """``part`` usable as one piece of a StatsD name (Airflow keeps ids as they are,
    which are already restricted to these characters; file names need it)."""
    return _UNSAFE.sub("_", part)


class StatsdClient:
    """Counters, gauges and timers sent as StatsD datagrams to ``host:port``."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.address = (host, port)
        self.prefix = f"{prefix}." if prefix else ""
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def incr(self, name: str, count: int = 1) -> None:
        self._send(f"{name}:{count}|c")

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{name}:{value:g}|g")

    def timing(self, name: str, seconds: float) -> None:
        """A timer, in milliseconds as StatsD (and Airflow) expect."""
        self._send(f"{name}:{seconds * 1000:.3f}|ms")

    def _send(self, line: str) -> None:
        try:
            self._socket.sendto((self.prefix + line).encode(), self.address)
        except OSError as exc:  # unreachable or buffer full: metrics never stop the work
            log.debug("statsd: %s not sent: %s", line, exc)

    def close(self) -> None:
        self._socket.close()


def statsd_from_config(conf: Config) -> StatsdClient | None:
    """The configured client, or None when ``[metrics] statsd_on`` is false."""
    metrics = conf.metrics
    if not metrics.statsd_on:
        return None
    return StatsdClient(metrics.statsd_host, metrics.statsd_port, metrics.statsd_prefix)
