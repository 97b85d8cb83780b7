"""Task groups: ``with TaskGroup("extract"):`` and ``@task_group``, as in Airflow.

A group is an authoring and display concept only. Tasks made inside it get the
id ``<group_id>.<task_id>`` (unless ``prefix_group_id=False``) and the group's
``default_args``; ``group >> other`` links the group's leaves and
``other >> group`` its roots. The scheduler sees plain tasks and edges; the
serialized DAG carries the group tree (:func:`serialize_task_groups`) so the
web UI can draw groups as boxes and rows.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from flowsched.exceptions import DagDefinitionError, DuplicateTaskIdError
from flowsched.ids import validate_id
from flowsched.operators.base import DependencyMixin

if TYPE_CHECKING:
    from flowsched.dag import DAG
    from flowsched.operators.base import BaseOperator


class TaskGroupContext:
    """The groups ``with TaskGroup(...):`` has entered, innermost last."""

    _stack: ClassVar[list[TaskGroup]] = []

    @classmethod
    def current(cls, dag: DAG | None) -> TaskGroup | None:
        """The innermost open group of ``dag``; a group of another DAG does not count."""
        for group in reversed(cls._stack):
            if group.dag is dag:
                return group
        return None


class TaskGroup(DependencyMixin):
    """A named, nestable set of tasks (Airflow's ``airflow.utils.task_group.TaskGroup``)."""

    def __init__(
        self,
        group_id: str,
        prefix_group_id: bool = True,
        parent_group: TaskGroup | None = None,
        dag: DAG | None = None,
        default_args: dict[str, Any] | None = None,
        tooltip: str = "",
        ui_color: str = "CornflowerBlue",
        ui_fgcolor: str = "#000",
        add_suffix_on_collision: bool = False,
        group_display_name: str = "",
    ) -> None:
        from flowsched.dag import DagContext

        validate_id("group_id", group_id, DagDefinitionError)
        dag = dag or (parent_group.dag if parent_group else None) or DagContext.current()
        if dag is None:
            raise DagDefinitionError(
                f"TaskGroup '{group_id}' must be created inside a DAG "
                "(`with DAG(...):`, a @dag function, or dag=...)"
            )
        self.dag: DAG = dag
        self.parent_group = parent_group or TaskGroupContext.current(dag)
        self.prefix_group_id = bool(prefix_group_id)
        self.default_args = {
            **(self.parent_group.default_args if self.parent_group else {}),
            **(default_args or {}),
        }
        self.tooltip = tooltip or ""
        self.ui_color = ui_color
        self.ui_fgcolor = ui_fgcolor
        self._group_id = group_id
        if add_suffix_on_collision:
            base, suffix = group_id, 0
            while self._taken(self.group_id):
                suffix += 1
                self._group_id = f"{base}__{suffix}"
        elif self._taken(self.group_id):
            raise DuplicateTaskIdError(
                f"DAG '{dag.dag_id}': group_id '{self.group_id}' has already been added to the DAG"
            )
        validate_id("task_id", self.group_id, DagDefinitionError)
        self.group_display_name = group_display_name or self._group_id
        # Tasks and groups directly inside this one, by their full ids, in creation order.
        self.children: dict[str, BaseOperator | TaskGroup] = {}
        dag.task_groups[self.group_id] = self
        if self.parent_group is not None:
            self.parent_group.children[self.group_id] = self

    def _taken(self, group_id: str) -> bool:
        return group_id in self.dag.task_groups or group_id in self.dag.tasks

    @property
    def group_id(self) -> str:
        """The full id: ``outer.inner`` when the parent prefixes its children's ids."""
        parent = self.parent_group
        if parent is not None and parent.prefix_group_id:
            return parent.child_id(self._group_id)
        return self._group_id

    @property
    def label(self) -> str:
        """The group's own name, without its parents' prefix."""
        return self._group_id

    def child_id(self, label: str) -> str:
        """The full id of a task or group named ``label`` inside this group."""
        return f"{self.group_id}.{label}" if self.prefix_group_id else label

    def add(self, task: BaseOperator) -> None:
        self.children[task.task_id] = task

    def iter_tasks(self) -> Iterator[BaseOperator]:
        """Every task in this group and its subgroups."""
        for child in self.children.values():
            if isinstance(child, TaskGroup):
                yield from child.iter_tasks()
            else:
                yield child

    def get_roots(self) -> list[BaseOperator]:
        """Tasks with no upstream inside the group: what ``other >> group`` links to."""
        inside = {task.task_id for task in self.iter_tasks()}
        return [t for t in self.iter_tasks() if not t.upstream_task_ids & inside]

    def get_leaves(self) -> list[BaseOperator]:
        """Tasks with no downstream inside the group: what ``group >> other`` links from."""
        inside = {task.task_id for task in self.iter_tasks()}
        return [t for t in self.iter_tasks() if not t.downstream_task_ids & inside]

    def _operators(self) -> list[BaseOperator]:
        return list(self.iter_tasks())

    def _upstream_end(self) -> list[BaseOperator]:
        return self.get_leaves()

    def _downstream_end(self) -> list[BaseOperator]:
        return self.get_roots()

    def __enter__(self) -> TaskGroup:
        TaskGroupContext._stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        TaskGroupContext._stack.pop()

    def __repr__(self) -> str:
        return f"<TaskGroup {self.group_id}>"


def task_group_for(dag: DAG | None, given: TaskGroup | None) -> TaskGroup | None:
    """The group a new task of ``dag`` belongs to: the one given, else the open one."""
    if given is not None:
        if dag is not None and given.dag is not dag:
            raise DagDefinitionError(
                f"task group '{given.group_id}' belongs to DAG '{given.dag.dag_id}', "
                f"not '{dag.dag_id}'"
            )
        return given
    return TaskGroupContext.current(dag)


def group_default_args(dag: DAG | None, group: TaskGroup | None) -> dict[str, Any]:
    """The DAG's default_args overridden by the group's (and its parents')."""
    return {**(dag.default_args if dag else {}), **(group.default_args if group else {})}


def unique_task_label(dag: DAG, group: TaskGroup | None, base: str) -> str:
    """``base``, or ``base__1``, ``base__2``... so the full id is new (repeated @task calls)."""
    label, n = base, 0
    while (group.child_id(label) if group else label) in dag.tasks:
        n += 1
        label = f"{base}__{n}"
    return label


def serialize_task_groups(dag: DAG) -> list[dict[str, Any]]:
    """The group tree for the UI, parents before children (the scheduler ignores it)."""
    return [
        {
            "group_id": group.group_id,
            "label": group.group_display_name,
            "parent_group_id": group.parent_group.group_id if group.parent_group else None,
            "tooltip": group.tooltip,
            "ui_color": group.ui_color,
            "ui_fgcolor": group.ui_fgcolor,
        }
        for group in dag.task_groups.values()
    ]


class _TaskGroupFactory:
    """What ``@task_group`` returns: calling it builds a group around the function's tasks."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        options = dict(self.options)
        options.setdefault("group_id", self.func.__name__)
        options.setdefault("tooltip", inspect.getdoc(self.func) or "")
        # Calling the function twice makes "name" and "name__1", as Airflow does.
        options.setdefault("add_suffix_on_collision", True)
        with TaskGroup(**options) as group:
            result = self.func(*args, **kwargs)
        # A returned task (or XComArg) is what later `>>` binds to; else the whole group.
        return group if result is None else result

    def override(self, **options: Any) -> _TaskGroupFactory:
        return _TaskGroupFactory(self.func, {**self.options, **options})


def task_group(python_callable: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@task_group`` or ``@task_group(group_id=..., default_args=..., tooltip=...)``."""
    if python_callable is not None:
        return _TaskGroupFactory(python_callable, options)
    return lambda func: _TaskGroupFactory(func, options)
