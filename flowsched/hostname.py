"""Who am I on the network: the name recorded on task instances and the default nodename.

Order: ``FLOWSCHED_HOSTNAME``, then ``core.hostname_callable``, then the
primary IPv4 address. ``socket.getfqdn()`` is deliberately not used: on VMs
carved from big hosts it returned names other machines could not resolve, so
the webserver could not fetch task logs.
"""

from __future__ import annotations

import importlib
import os
import socket

from flowsched.config import get_config
from flowsched.exceptions import ConfigError


def primary_ip() -> str:
    """The source address of the default route (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _call(path: str) -> str:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"[core] hostname_callable = {path!r}: expected 'module:function'")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"[core] hostname_callable = {path!r}: {exc}") from exc
    return str(function())


def get_hostname() -> str:
    explicit = os.environ.get("FLOWSCHED_HOSTNAME")
    if explicit:
        return explicit
    callable_path = get_config().core.hostname_callable
    if callable_path:
        return _call(callable_path)
    return primary_ip()


def default_nodename() -> str:
    configured = get_config().worker.nodename
    if configured:
        return configured
    ip = primary_ip()
    return f"{ip}@{ip}"
