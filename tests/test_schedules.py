"""Schedules: cron in the DAG's zone, catchup, intervals, presets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flowsched.schedules import CronSchedule, DeltaSchedule, Interval, OnceSchedule
from flowsched.timezone import parse_timezone

ZONE = parse_timezone("Etc/GMT-8")


def local(*args):
    return datetime(*args, tzinfo=ZONE)


def test_cron_is_evaluated_in_the_dag_zone():
    schedule = CronSchedule("0 8 * * *", ZONE)
    first = schedule.next_interval(None, local(2026, 1, 1), None, True, local(2026, 1, 10))
    assert first == Interval(local(2026, 1, 1, 8), local(2026, 1, 2, 8))
    assert first.start.astimezone(UTC).hour == 0  # 08:00 +08:00 is midnight UTC


def test_catchup_walks_every_interval_and_no_catchup_jumps_to_latest():
    schedule = CronSchedule("@daily", ZONE)
    now = local(2026, 1, 10, 12)
    with_catchup = schedule.next_interval(None, local(2026, 1, 1), None, True, now)
    assert with_catchup.start == local(2026, 1, 1)
    second = schedule.next_interval(with_catchup, local(2026, 1, 1), None, True, now)
    assert second.start == local(2026, 1, 2)
    without = schedule.next_interval(None, local(2026, 1, 1), None, False, now)
    assert without == Interval(local(2026, 1, 9), local(2026, 1, 10))


def test_end_date_stops_the_schedule():
    schedule = CronSchedule("@daily", ZONE)
    last = Interval(local(2026, 1, 2), local(2026, 1, 3))
    assert (
        schedule.next_interval(
            last, local(2026, 1, 1), local(2026, 1, 2, 12), True, local(2026, 2, 1)
        )
        is None
    )


def test_timedelta_schedule_and_backfill_intervals():
    schedule = DeltaSchedule(timedelta(hours=6))
    start = local(2026, 1, 1)
    first = schedule.next_interval(None, start, None, True, local(2026, 1, 1, 7))
    assert first == Interval(start, local(2026, 1, 1, 6))
    intervals = schedule.intervals_between(start, local(2026, 1, 1, 18))
    assert [i.start.hour for i in intervals] == [0, 6, 12, 18]


def test_cron_backfill_intervals_include_both_ends():
    schedule = CronSchedule("@daily", ZONE)
    intervals = schedule.intervals_between(local(2026, 1, 1), local(2026, 1, 3))
    assert [i.start.day for i in intervals] == [1, 2, 3]


def test_once_runs_once():
    schedule = OnceSchedule()
    first = schedule.next_interval(None, local(2026, 1, 1), None, True, local(2026, 1, 2))
    assert first.start == local(2026, 1, 1)
    assert schedule.next_interval(first, local(2026, 1, 1), None, True, local(2026, 1, 2)) is None
