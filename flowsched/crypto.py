"""Fernet encryption of the secrets kept in the metadata database.

``core.fernet_key`` holds one key or a comma-separated list. As with Airflow's
``MultiFernet``, the first key encrypts and every key decrypts, so rotating is:
put a new key first, keep the old one after it, run ``flowsched
rotate-fernet-key`` (re-encrypts every row with the first key), then drop the
old key. Without a key nothing secret is stored: writing a password, an extra
or a variable value raises :class:`FernetKeyMissing` instead of storing it in
clear, which is what Airflow does and what a leaked database backup punishes.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from flowsched.exceptions import ConfigError, FlowschedError


class FernetKeyMissing(FlowschedError):
    """A secret was to be stored or read, but ``core.fernet_key`` is empty."""


class DecryptionFailed(FlowschedError):
    """A stored secret does not decrypt with any key of ``core.fernet_key``."""


MISSING_KEY_HELP = (
    "core.fernet_key is empty, and flowsched does not store secrets in clear: "
    "create a key with `flowsched rotate-fernet-key --generate` and set it in "
    "[core] fernet_key (or FLOWSCHED__CORE__FERNET_KEY) on every host"
)


def generate_key() -> str:
    """A new random Fernet key (32 bytes, URL-safe base64)."""
    return Fernet.generate_key().decode()


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def check_fernet_keys(raw: str) -> None:
    """Raise ConfigError naming the position of a malformed key (never echoing it)."""
    for index, key in enumerate(_split(raw), start=1):
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            raise ConfigError(
                f"key {index} of the list is not a Fernet key (32 bytes in URL-safe base64, "
                "44 characters ending in '='); create one with "
                "`flowsched rotate-fernet-key --generate`"
            )


def get_fernet(raw: str | None = None) -> MultiFernet:
    """The MultiFernet of ``core.fernet_key`` (or ``raw``); FernetKeyMissing if empty."""
    if raw is None:
        from flowsched.config import get_config

        raw = get_config().core.fernet_key
    keys = _split(raw or "")
    if not keys:
        raise FernetKeyMissing(MISSING_KEY_HELP)
    return MultiFernet([Fernet(key.encode()) for key in keys])


def encrypt(value: str | None, what: str) -> str | None:
    """``value`` encrypted with the first key; None stays None. ``what`` names it in errors."""
    if value is None:
        return None
    try:
        fernet = get_fernet()
    except FernetKeyMissing:
        raise FernetKeyMissing(f"refusing to store {what}: {MISSING_KEY_HELP}") from None
    return fernet.encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str | None, what: str) -> str | None:
    if token is None:
        return None
    try:
        fernet = get_fernet()
    except FernetKeyMissing:
        raise FernetKeyMissing(f"cannot read {what}: {MISSING_KEY_HELP}") from None
    try:
        return fernet.decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise DecryptionFailed(
            f"cannot decrypt {what}: no key in core.fernet_key fits; was it encrypted with "
            "a key since removed from the list? Put that key back after the current one"
        ) from None


def rotate(token: str | None, what: str) -> str | None:
    """Re-encrypt ``token`` with the first key (it may have been made with any key)."""
    if token is None:
        return None
    try:
        return get_fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise DecryptionFailed(
            f"cannot rotate {what}: no key in core.fernet_key decrypts it"
        ) from None
