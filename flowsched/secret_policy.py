"""What counts as a strong enough secret: long, and not a value published anywhere.

One rule for every place a secret is set: ``[core] secret_key`` when the
config is loaded (it signs web sessions and log-server tokens, so a guessable
key lets anyone forge an admin session), users' passwords, and the
deployment's ``validate`` (roles/flowsched/tasks/validate.yml mirrors these
numbers and list; tests/deploy checks the two agree).
"""

from __future__ import annotations

MIN_SECRET_KEY_LENGTH = 32
MIN_PASSWORD_LENGTH = 8  # people's web logins (throttled)
MIN_SERVICE_PASSWORD_LENGTH = 12  # Flower, MariaDB, Redis: machine-held, on the network

# Values printed in this repository's inventories, docs and examples: anyone can
# read them, so a cluster using one is as open as one with no secret at all.
KNOWN_EXAMPLE_VALUES = frozenset(
    {
        "lab-only-db-password",
        "lab-only-broker-password",
        "lab-only-secret-key-not-for-production",
        "lab-only-flower",
        "lab-only-admin",
        "flowsched-example-vault",
        "secret",
        "changeme",
        "change-me",
        "password",
        "admin",
        "flowsched",
    }
)
PLACEHOLDER_MARK = "change-me"


def weakness(value: str, min_length: int) -> str | None:
    """Why ``value`` is not acceptable as a secret, or None when it is."""
    lowered = value.strip().lower()
    if PLACEHOLDER_MARK in lowered or lowered in KNOWN_EXAMPLE_VALUES:
        return "it is a published example value: generate your own (e.g. `openssl rand -hex 32`)"
    if len(value) < min_length:
        return (
            f"it is {len(value)} characters long, at least {min_length} are needed "
            "(e.g. `openssl rand -hex 32`)"
        )
    if len(set(value)) < 4:
        return "it repeats too few distinct characters to be hard to guess"
    return None


def check_secret_key(value: str) -> str:
    """The config parser of ``[core] secret_key``: empty (unset) or strong."""
    if value:
        reason = weakness(value, MIN_SECRET_KEY_LENGTH)
        if reason:
            raise ValueError(f"secret_key is too weak: {reason}")
    return value


def check_service_password(value: str, where: str) -> None:
    """Refuse a weak password of a service (Flower's basic auth) before serving with it."""
    from flowsched.exceptions import ConfigError

    reason = weakness(value, MIN_SERVICE_PASSWORD_LENGTH)
    if reason:
        raise ConfigError(f"{where}: the password is too weak: {reason}")
