"""Task groups on the pages: which groups are open, what a closed group stands for.

Groups start closed, as in Airflow's graph and grid. The open ones travel in
the page address (``?expand=extract&expand=extract.inner``), so a group opens
and closes with a plain link, without JavaScript, and a live refresh keeps
what the user opened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flowsched.serialization import SerializedDAG

# A closed group shows the first of these that any of its tasks is in; all
# success or skipped is success, all skipped is skipped (Airflow's summary).
STATE_PRIORITY = (
    "failed",
    "upstream_failed",
    "up_for_retry",
    "up_for_reschedule",
    "running",
    "restarting",
    "queued",
    "scheduled",
    "deferred",
    "none",
    "removed",
    "success",
    "skipped",
)


def summary_state(states: Iterable[str | None]) -> str:
    seen = {state or "none" for state in states}
    for state in STATE_PRIORITY:
        if state in seen:
            return state
    return sorted(seen)[0] if seen else "none"


@dataclass(frozen=True)
class GroupView:
    """Which groups of one DAG are open on this page."""

    dag: SerializedDAG
    expanded: frozenset[str]

    @classmethod
    def from_args(cls, dag: SerializedDAG, wanted: Iterable[str]) -> GroupView:
        wanted = set(wanted)
        if "all" in wanted:
            return cls(dag, frozenset(dag.task_groups))
        return cls(dag, frozenset(g for g in wanted if g in dag.task_groups))

    def is_open(self, group_id: str) -> bool:
        """Open, and every group around it open too (else it is not shown at all)."""
        chain = [*self.ancestors(group_id), group_id]
        return all(g in self.expanded for g in chain)

    def ancestors(self, group_id: str) -> list[str]:
        out: list[str] = []
        parent = self.dag.task_groups[group_id].parent_group_id
        while parent is not None:
            out.insert(0, parent)
            parent = self.dag.task_groups[parent].parent_group_id
        return out

    def shown_as(self, task_id: str) -> str:
        """The task itself, or the outermost closed group that hides it."""
        for group_id in self.dag.groups_of(task_id):
            if group_id not in self.expanded:
                return group_id
        return task_id

    def open_groups_of(self, node_id: str) -> list[str]:
        """The open groups drawn around a shown task or closed group, outermost first."""
        if node_id in self.dag.task_groups:
            return self.ancestors(node_id)
        return self.dag.groups_of(node_id)

    def members(self, group_id: str) -> list[str]:
        """Every task inside ``group_id`` (and its subgroups)."""
        return [t for t in self.dag.tasks if group_id in self.dag.groups_of(t)]

    def toggled(self, group_id: str) -> list[str]:
        """The ``expand`` values that open ``group_id``, or close it and the groups inside."""
        if group_id in self.expanded:
            keep = {g for g in self.expanded if g != group_id and group_id not in self.ancestors(g)}
        else:
            keep = {*self.expanded, group_id, *self.ancestors(group_id)}
        return sorted(keep)


@dataclass(frozen=True)
class GridRow:
    """One row of the grid: a task, or a task group summarising its tasks."""

    node_id: str
    label: str
    depth: int  # how many groups it sits in
    is_group: bool
    is_open: bool
    states: list[tuple[str, int] | None]  # per run: (state, try_number), None if absent
    tooltip: str = ""


def grid_rows(
    view: GroupView, task_ids: list[str], cells: list[list[tuple[str, int] | None]]
) -> list[GridRow]:
    """Rows in tree order: each group where its first task would be, its members under it.

    ``cells[i]`` holds task ``task_ids[i]``'s (state, try_number) per run. A closed
    group's row shows, per run, the summary state of its tasks; rows inside a
    closed group are left out.
    """
    dag = view.dag
    row_of = dict(zip(task_ids, cells, strict=True))
    children: dict[str | None, list[str]] = {None: []}
    for task_id in task_ids:
        parent: str | None = None
        for group_id in dag.groups_of(task_id) if task_id in dag.tasks else []:
            if group_id not in children:
                children[group_id] = []
                children[parent].append(group_id)
            parent = group_id
        children[parent].append(task_id)

    def member_cells(group_id: str) -> list[list[tuple[str, int] | None]]:
        out = []
        for child in children[group_id]:
            out.extend(member_cells(child) if child in children else [row_of[child]])
        return out

    def summary(group_id: str) -> list[tuple[str, int] | None]:
        columns = zip(*member_cells(group_id), strict=True)
        return [
            (summary_state(c[0] for c in present), 0)
            if (present := [c for c in col if c])
            else None
            for col in columns
        ]

    rows: list[GridRow] = []

    def walk(parent: str | None, depth: int) -> None:
        for child in children[parent]:
            if child in children:
                group = dag.task_groups[child]
                is_open = child in view.expanded
                rows.append(
                    GridRow(child, group.label, depth, True, is_open, summary(child), group.tooltip)
                )
                if is_open:
                    walk(child, depth + 1)
            else:
                short = (
                    child[len(parent) + 1 :] if parent and child.startswith(parent + ".") else child
                )
                rows.append(GridRow(child, short, depth, False, False, row_of[child]))

    walk(None, 0)
    return rows
