"""Geometry of the server-side SVG charts: scales, ticks and shapes; templates draw them.

Nothing here touches the database or Flask: :mod:`flowsched.web.chart_queries`
reads, this module places, and the ``chart_*.html`` templates emit ``<svg>``
with a ``<title>`` on every shape (the figures, for tooltips and screen
readers). Colours are CSS classes (``s-<state>``), never inline styles, so
the dark theme and new states need only CSS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from flowsched.timezone import default_timezone, display, to_utc, utcnow
from flowsched.web.app import format_duration
from flowsched.web.chart_queries import Calendar, Gantt, History, TryTimes

WIDTH = 1000
LABEL_WIDTH = 190
MARGIN = 12
AXIS_HEIGHT = 24
ROW_HEIGHT = 26
BAR_HEIGHT = 16
COLUMN_ROW_HEIGHT = 64
CELL = 14
CELL_GAP = 3
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200)


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str

    def __post_init__(self) -> None:
        # tenths of a pixel: shorter SVG, and no rounding filter per bar in the template
        for name in ("x", "y", "width", "height"):
            object.__setattr__(self, name, round(getattr(self, name), 1))


@dataclass(frozen=True)
class TryShape:
    """One try in the Gantt chart: its wait in the queue and its run."""

    task_id: str
    try_number: int
    state: str
    wait: Rect | None
    run: Rect | None
    title: str


@dataclass(frozen=True)
class RowLabel:
    y: float
    text: str
    title: str
    baseline: float = 0.0  # the bottom of the row, where its bars stand


@dataclass(frozen=True)
class Drawing:
    width: float
    height: float
    labels: list[RowLabel]
    ticks: list[Tick]
    plot_top: float
    plot_bottom: float
    plot_left: float = LABEL_WIDTH


def _step(span: float, wanted: int, steps: tuple[float, ...] = NICE_STEPS) -> float:
    """A round step that cuts ``span`` into at most about ``wanted`` pieces."""
    raw = span / max(1, wanted)
    for step in steps:
        if step >= raw:
            return step
    return math.ceil(raw / steps[-1]) * steps[-1]


def _nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above ``value`` (an axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return float(factor * power)
    return float(10 * power)


def _local_clock(value: datetime, seconds: bool) -> str:
    return to_utc(value).astimezone(default_timezone()).strftime("%H:%M:%S" if seconds else "%H:%M")


def try_title(attempt: TryTimes, zone: tzinfo, *, times: bool = True) -> str:
    """The figures of a try, for its tooltip; ``times=False`` leaves out queued and ended."""
    parts = [f"{attempt.task_id}, try {attempt.try_number}: {attempt.state}"]
    if times and attempt.queued_at:
        parts.append(f"queued {display(attempt.queued_at, zone, seconds=True)}")
    if attempt.start_date:
        parts.append(f"started {display(attempt.start_date, zone, seconds=True)}")
    if times and attempt.end_date:
        parts.append(f"ended {display(attempt.end_date, zone, seconds=True)}")
    if attempt.queued_seconds is not None:
        parts.append(f"waited {format_duration(attempt.queued_seconds)}")
    if attempt.seconds is not None:
        parts.append(f"ran {format_duration(attempt.seconds)}")
    if attempt.hostname:
        parts.append(f"on {attempt.hostname}")
    return "; ".join(parts)


# -- Gantt ---------------------------------------------------------------------
def gantt_layout(chart: Gantt) -> tuple[Drawing, list[TryShape]]:
    """One row per task, one shape per try along a shared time axis."""
    top = MARGIN + AXIS_HEIGHT
    height = top + len(chart.task_ids) * ROW_HEIGHT + MARGIN
    rows = {task_id: n for n, task_id in enumerate(chart.task_ids)}
    labels = [
        RowLabel(top + n * ROW_HEIGHT + ROW_HEIGHT / 2 + 4, task_id, task_id)
        for task_id, n in rows.items()
    ]
    start, end = chart.start, chart.end
    if start is None or end is None:
        return Drawing(WIDTH, height, labels, [], top, height - MARGIN), []
    span = max(1.0, (end - start).total_seconds())
    left, right = LABEL_WIDTH, WIDTH - MARGIN
    scale = (right - left) / span

    def x_of(value: datetime) -> float:
        return left + (value - start).total_seconds() * scale

    step = _step(span, 8)
    ticks = []
    offset = 0.0
    while offset <= span + 1e-6:
        moment = start + timedelta(seconds=offset)
        ticks.append(Tick(left + offset * scale, _local_clock(moment, seconds=step < 60)))
        offset += step
    now = utcnow()
    zone = default_timezone()
    shapes = []
    for attempt in chart.tries:
        y = top + rows[attempt.task_id] * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2
        title = try_title(attempt, zone)
        wait = run = None
        if attempt.queued_at is not None:
            until = attempt.start_date or attempt.end_date or now
            x = x_of(attempt.queued_at)
            wait = Rect(x, y, max(1.0, x_of(until) - x), BAR_HEIGHT, "wait", title)
        if attempt.start_date is not None:
            x = x_of(attempt.start_date)
            width = max(2.0, x_of(attempt.end_date or now) - x)
            run = Rect(x, y, width, BAR_HEIGHT, f"s-{attempt.state}", title)
        shapes.append(
            TryShape(attempt.task_id, attempt.try_number, attempt.state, wait, run, title)
        )
    return Drawing(WIDTH, height, labels, ticks, top, height - MARGIN), shapes


# -- the last N runs, one row per task ---------------------------------------------
@dataclass(frozen=True)
class ColumnBar:
    task_id: str
    run_id: str
    try_number: int
    state: str
    seconds: float
    rect: Rect


def _columns(
    history: History, values: dict[str, list[tuple[str, int, str, float, str]]]
) -> tuple[Drawing, list[ColumnBar], float]:
    """Rows of tasks by columns of runs; within a run's column, one bar per value (try).

    ``values``: task_id -> [(run_id, try_number, state, seconds, title)]. Every
    row shares one scale (the largest value), so rows compare honestly.
    """
    top = MARGIN + AXIS_HEIGHT
    height = top + len(history.task_ids) * COLUMN_ROW_HEIGHT + MARGIN
    labels = [
        RowLabel(
            top + n * COLUMN_ROW_HEIGHT + COLUMN_ROW_HEIGHT / 2 + 4,
            task_id,
            task_id,
            baseline=top + (n + 1) * COLUMN_ROW_HEIGHT - 4,
        )
        for n, task_id in enumerate(history.task_ids)
    ]
    largest = max((v[3] for items in values.values() for v in items), default=0.0)
    axis_top = _nice_max(largest)
    column = {run.run_id: n for n, run in enumerate(history.runs)}
    slot = (WIDTH - MARGIN - LABEL_WIDTH) / max(1, len(history.runs))
    every = max(1, math.ceil(len(history.runs) / 10))
    ticks = [
        Tick(LABEL_WIDTH + (n + 0.5) * slot, display(run.logical_date)[5:16])
        for n, run in enumerate(history.runs)
        if n % every == 0
    ]
    bars = []
    usable = COLUMN_ROW_HEIGHT - 10
    for row, task_id in enumerate(history.task_ids):
        bottom = top + (row + 1) * COLUMN_ROW_HEIGHT - 4
        by_run: dict[str, list[tuple[str, int, str, float, str]]] = {}
        for item in values.get(task_id, []):
            if item[0] in column:
                by_run.setdefault(item[0], []).append(item)
        for run_id, items in by_run.items():
            inner = min(slot * 0.8, 28.0)
            width = inner / len(items)
            left = LABEL_WIDTH + column[run_id] * slot + (slot - inner) / 2
            for n, (_, try_number, state, seconds, title) in enumerate(items):
                h = max(1.5, usable * max(0.0, seconds) / axis_top)
                rect = Rect(
                    left + n * width, bottom - h, max(1.5, width - 1), h, f"s-{state}", title
                )
                bars.append(ColumnBar(task_id, run_id, try_number, state, seconds, rect))
    return Drawing(WIDTH, height, labels, ticks, top, height - MARGIN), bars, axis_top


def durations_layout(history: History) -> tuple[Drawing, list[ColumnBar], float]:
    """Each try's run time: a task retried in a run shows one bar per try."""
    zone = default_timezone()
    values: dict[str, list[tuple[str, int, str, float, str]]] = {}
    for attempt in history.tries:
        if attempt.seconds is not None:
            title = f"{try_title(attempt, zone, times=False)} (run {attempt.run_id})"
            values.setdefault(attempt.task_id, []).append(
                (attempt.run_id, attempt.try_number, attempt.state, attempt.seconds, title)
            )
    return _columns(history, values)


def landing_layout(history: History) -> tuple[Drawing, list[ColumnBar], float]:
    """Each task's landing time: its end, counted from the end of the run's data interval."""
    zone = default_timezone()
    values: dict[str, list[tuple[str, int, str, float, str]]] = {}
    for landing in history.landings:
        title = (
            f"{landing.task_id} in {landing.run_id}: {landing.state}, landed "
            f"{format_duration(landing.seconds)} after the data interval ended "
            f"(at {display(landing.end_date, zone, seconds=True)}, try {landing.try_number})"
        )
        values.setdefault(landing.task_id, []).append(
            (landing.run_id, landing.try_number, landing.state, landing.seconds, title)
        )
    return _columns(history, values)


# -- calendar ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DayCell:
    day: date
    state: str
    total: int
    x: float
    y: float
    title: str


def calendar_layout(chart: Calendar) -> tuple[float, float, list[DayCell], list[Tick]]:
    """Weeks as columns (Monday on top), like a contribution calendar."""
    first_monday = chart.first - timedelta(days=chart.first.weekday())
    left, top = MARGIN + 30, MARGIN + 18
    cells = []
    months = []
    day = chart.first
    while day <= chart.last:
        week = (day - first_monday).days // 7
        x = left + week * (CELL + CELL_GAP)
        y = top + day.weekday() * (CELL + CELL_GAP)
        found = chart.days.get(day)
        if found is None:
            cells.append(DayCell(day, "none", 0, x, y, f"{day.isoformat()}: no runs"))
        else:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(found.counts.items()))
            title = f"{day.isoformat()}: {found.total} run(s): {counts}"
            cells.append(DayCell(day, found.state, found.total, x, y, title))
        if day.day == 1 or day == chart.first:
            months.append(Tick(x, day.strftime("%b %Y" if day.month == 1 or not months else "%b")))
        day += timedelta(days=1)
    weeks = (chart.last - first_monday).days // 7 + 1
    width = left + weeks * (CELL + CELL_GAP) + MARGIN
    height = top + 7 * (CELL + CELL_GAP) + MARGIN
    return width, height, cells, months


# -- meters (cluster page) ---------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    x: float  # percent of the meter's width
    width: float
    css: str
    title: str


def meter(parts: list[tuple[str, float, str]], total: float) -> list[Segment]:
    """Segments of a horizontal bar, in percent: ``parts`` is [(css, value, title)]."""
    whole = max(total, sum(value for _, value, _ in parts), 1e-9)
    segments = []
    x = 0.0
    for css, value, title in parts:
        if value <= 0:
            continue
        width = 100.0 * value / whole
        segments.append(Segment(round(x, 3), round(width, 3), css, title))
        x += width
    return segments
