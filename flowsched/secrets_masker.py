"""Masking secrets in task logs: every byte a try writes passes through here.

A try's stdout and stderr, and those of every process it starts (bash, a
container's copied output, ``os.system``), used to be the log file itself
(``dup2``). A logging filter, as Airflow has, would only see log records, not
what ``print`` or a child process writes. So :func:`redirect_output` points
fds 1 and 2 at a pipe instead, and a thread of the task process copies the
pipe to the log file line by line, replacing each registered secret with
``***``. Secrets are registered in the same process before they can be
printed: a connection's password (and extra fields with sensitive names) when
it is looked up, a variable's value when its key looks sensitive (Airflow's
``DEFAULT_SENSITIVE_FIELDS``), and, at start, those of ``FLOWSCHED_CONN_*`` /
``FLOWSCHED_VAR_*`` in the environment, which child processes may read on
their own.

Limits, by design: a secret shorter than :data:`MIN_LENGTH` characters is not
masked (masking ``abc`` everywhere would garble logs; Airflow 3 does the
same); a secret a child process finds by itself (reading a file) is unknown
here; output of a process that outlives its try is cut when the try ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from typing import Any
from urllib.parse import quote

DEFAULT_SENSITIVE_FIELDS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "authorization",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "secret",
        "token",
        "keyfile_dict",
        "service_account",
    }
)
MASK = "***"
MIN_LENGTH = 5
FORCE_FLUSH_BYTES = 1 << 20  # a line longer than this is written out unended
FINISH_TIMEOUT = 5.0  # seconds the end of a try waits for child processes' last output


def should_hide_value_for_key(name: object) -> bool:
    """Whether a variable key or extra field name looks sensitive (Airflow's rule)."""
    if not isinstance(name, str):
        return False
    lowered = name.strip().lower()
    return any(field in lowered for field in DEFAULT_SENSITIVE_FIELDS)


class SecretsMasker:
    """The secrets registered in this process and the regex that replaces them."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.replacer: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add_mask(self, secret: Any, name: str | None = None) -> None:
        if isinstance(secret, dict):
            for key, value in secret.items():
                self.add_mask(value, key)
            return
        if isinstance(secret, list | tuple | set):
            for value in secret:
                self.add_mask(value, name)
            return
        if not isinstance(secret, str) or (name and not should_hide_value_for_key(name)):
            return
        variants = {secret, quote(secret, safe=""), *secret.splitlines()}
        new = {v for v in variants if len(v) >= MIN_LENGTH and v.strip()} - self.secrets
        if not new:
            return
        with self._lock:
            self.secrets |= new
            ordered = sorted(self.secrets, key=len, reverse=True)  # longest first
            self.replacer = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, value: Any, name: str | None = None) -> Any:
        """``value`` with secrets replaced: strings, and the strings inside dicts and lists;
        every string under a sensitive key (``{"password": ...}``) entirely."""
        if name and should_hide_value_for_key(name) and isinstance(value, str | int | float):
            return MASK if value not in ("", None) else value
        if isinstance(value, str):
            replacer = self.replacer
            return replacer.sub(MASK, value) if replacer else value
        if isinstance(value, dict):
            return {k: self.redact(v, k if isinstance(k, str) else None) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact(v) for v in value)
        return value

    def redact_bytes(self, data: bytes) -> bytes:
        if self.replacer is None:
            return data
        text = data.decode("utf-8", errors="surrogateescape")
        return self.redact(text).encode("utf-8", errors="surrogateescape")


_masker = SecretsMasker()


def mask_secret(secret: Any, name: str | None = None) -> None:
    """Mask ``secret`` in this process's task log from now on (Airflow's ``mask_secret``).

    With ``name``, only if the name looks sensitive; a dict masks the values of its
    sensitive keys.
    """
    if secret:
        _masker.add_mask(secret, name)


def redact(value: Any, name: str | None = None) -> Any:
    return _masker.redact(value, name)


def mask_connection(conn: Any) -> None:
    """A connection's password, and the extra fields whose names look sensitive."""
    if conn.password:
        _masker.add_mask(conn.password)
    with contextlib.suppress(Exception):  # a malformed extra is reported where it is used
        _masker.add_mask(conn.extra_dejson)


def mask_environment(environ: dict[str, str] | None = None) -> None:
    """Register the secrets of ``FLOWSCHED_CONN_*`` and sensitive ``FLOWSCHED_VAR_*``."""
    from flowsched.secrets.base import parse_connection
    from flowsched.secrets.environment import CONN_ENV_PREFIX, VAR_ENV_PREFIX

    for name, value in (os.environ if environ is None else environ).items():
        if name.startswith(CONN_ENV_PREFIX):
            with contextlib.suppress(Exception):
                mask_connection(parse_connection(name[len(CONN_ENV_PREFIX) :], value, name))
        elif name.startswith(VAR_ENV_PREFIX):
            mask_secret(value, name=name[len(VAR_ENV_PREFIX) :])


class MaskingFilter(logging.Filter):
    """For log handlers that write straight to a file (``flowsched tasks run``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


class _Copier(threading.Thread):
    """Copies the pipe to the log file, one whole line at a time, redacted."""

    def __init__(self, read_fd: int, log_fd: int) -> None:
        super().__init__(daemon=True, name="log-masker")
        self.read_fd = read_fd
        self.log_fd = log_fd

    def _write(self, data: bytes) -> None:
        data = _masker.redact_bytes(data)
        while data:
            written = os.write(self.log_fd, data)
            data = data[written:]

    def run(self) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    break
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if cut:
                    self._write(pending[:cut])
                    pending = pending[cut:]
                if len(pending) > FORCE_FLUSH_BYTES:
                    self._write(pending)
                    pending = b""
            if pending:
                self._write(pending)
        finally:
            os.close(self.read_fd)


class MaskedOutput:
    """fds 1 and 2 of this process going through the masking copier to the log file."""

    def __init__(self, log_fd: int) -> None:
        self.log_fd = log_fd
        read_fd, write_fd = os.pipe()
        self.copier = _Copier(read_fd, self.log_fd)
        self.copier.start()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)

    def finish(self, timeout: float = FINISH_TIMEOUT) -> bool:
        """Flush, stop writing into the pipe, and wait for the copier to drain it.

        fds 1 and 2 then point at the log file directly, for whatever the process
        still prints on its way out. False if a child process kept the pipe open
        past ``timeout`` (its later output is lost, not written unmasked).
        """
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(self.log_fd, 1)
        os.dup2(self.log_fd, 2)
        self.copier.join(timeout)
        return not self.copier.is_alive()


_active: MaskedOutput | None = None


def redirect_output(log_fd: int) -> MaskedOutput:
    """Send this process's stdout/stderr (and its children's) to the open log ``log_fd``,
    masked."""
    global _active
    mask_environment()
    _active = MaskedOutput(log_fd)
    return _active


def finish_output(timeout: float = FINISH_TIMEOUT) -> None:
    """At the end of a try: drain the masking pipe into the log (no-op if none)."""
    global _active
    active, _active = _active, None
    if active is not None:
        active.finish(timeout)
