"""``from flowsched.utils.task_group import TaskGroup``, the path Airflow DAG files use."""

from flowsched.task_group import TaskGroup, task_group

__all__ = ["TaskGroup", "task_group"]
