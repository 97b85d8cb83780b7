"""Short-lived tokens that let a holder of the cluster's secret read one log file.

The token is the log's relative path signed with ``core.secret_key`` and a
timestamp. The log server accepts it for that path only and for
:data:`TOKEN_TTL` seconds, so a token seen in a proxy log or a browser is
useless for any other file and soon for that one too. Clocks of the
webserver and workers must agree within that window (NTP).
"""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from flowsched.config import get_config
from flowsched.exceptions import ConfigError, FlowschedError

TOKEN_TTL = 60
_SALT = "flowsched.log-server"


class TokenRefused(FlowschedError):
    """A log-server token is missing, forged, expired or for another file."""


def _serializer(secret_key: str | None = None) -> URLSafeTimedSerializer:
    key = secret_key if secret_key is not None else get_config().core.secret_key
    if not key:
        raise ConfigError("[core] secret_key is empty: log-server tokens cannot be signed")
    return URLSafeTimedSerializer(key, salt=_SALT)


def sign(relative_path: str, secret_key: str | None = None) -> str:
    """A token for reading ``relative_path`` (relative to the log folder)."""
    return _serializer(secret_key).dumps({"path": relative_path})


def verify(token: str, relative_path: str, secret_key: str | None = None) -> None:
    """Raise :class:`TokenRefused` unless ``token`` is valid now for ``relative_path``."""
    try:
        payload = _serializer(secret_key).loads(token, max_age=TOKEN_TTL)
    except SignatureExpired as exc:
        raise TokenRefused(f"token expired (valid {TOKEN_TTL} s; are clocks in sync?)") from exc
    except BadSignature as exc:
        raise TokenRefused("bad token signature (is core.secret_key the same?)") from exc
    if not isinstance(payload, dict) or payload.get("path") != relative_path:
        raise TokenRefused("token was issued for another file")
