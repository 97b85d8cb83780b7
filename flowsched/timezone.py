"""Time zones done once: UTC in the database, the cluster zone everywhere a person looks.

Every timestamp flowsched stores is timezone-aware UTC. Naive datetimes written
in DAG files mean wall-clock time in ``core.default_timezone`` (as Airflow
users expect); everywhere else a naive datetime is a bug and is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowsched.exceptions import ConfigError


def parse_timezone(name: str) -> ZoneInfo:
    """Resolve an IANA zone name. Note ``Etc/GMT-8`` is UTC+8 (POSIX inverts the sign)."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r} (use an IANA name like 'Etc/GMT-8')"
        ) from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_timezone() -> ZoneInfo:
    from flowsched.config import get_config

    return parse_timezone(get_config().core.default_timezone)


def is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.tzinfo.utcoffset(value) is not None


def make_aware(value: datetime, zone: tzinfo | None = None) -> datetime:
    """Attach ``zone`` (default: the cluster zone) to a naive wall-clock datetime."""
    if is_aware(value):
        return value
    return value.replace(tzinfo=zone or default_timezone())


def to_utc(value: datetime) -> datetime:
    if not is_aware(value):
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def format_offset(offset: timedelta) -> str:
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def display(value: datetime | None, zone: tzinfo | None = None, seconds: bool = False) -> str:
    """Render for people: ``2026-11-24 08:00 +08:00`` in the cluster zone, never bare UTC."""
    if value is None:
        return "-"
    local = to_utc(value).astimezone(zone or default_timezone())
    stamp = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{stamp} {format_offset(local.utcoffset() or timedelta(0))}"


def parse_datetime(text: str, zone: tzinfo | None = None) -> datetime:
    """Parse ISO 8601 from the CLI or API; a naive value means the cluster zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 date or datetime: {text!r}") from exc
    return make_aware(value, zone).astimezone(UTC)


def zone_of(value: datetime) -> ZoneInfo:
    """The IANA zone of an aware datetime from a DAG file: stdlib, zoneinfo or pendulum.

    ``pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam")`` carries a ZoneInfo
    subclass; a fixed offset (``+02:00``) becomes ``Etc/GMT-2`` so that the
    serialized DAG still names a zone the scheduler can load.
    """
    zone = value.tzinfo
    key = getattr(zone, "key", None)
    if key:
        return parse_timezone(key)
    offset = value.utcoffset() or timedelta(0)
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    if rest:
        raise ConfigError(
            f"time zone {zone} of {value.isoformat()} is a fixed offset that is not whole "
            "hours: use an IANA zone name (e.g. tz='Asia/Kolkata')"
        )
    return parse_timezone("UTC" if hours == 0 else f"Etc/GMT{-hours:+d}")
