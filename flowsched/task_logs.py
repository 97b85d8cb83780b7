"""Where a try's log lives, and reading it back locally."""

from __future__ import annotations

from pathlib import Path

from flowsched.config import get_config


def relative_log_path(dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    return f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt={try_number}.log"


def log_path(dag_id: str, run_id: str, task_id: str, try_number: int) -> Path:
    base = Path(get_config().logging.base_log_folder)
    return base / relative_log_path(dag_id, run_id, task_id, try_number)


def read_local_log(dag_id: str, run_id: str, task_id: str, try_number: int) -> str | None:
    path = log_path(dag_id, run_id, task_id, try_number)
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
