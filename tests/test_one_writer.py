"""flowsched.lifecycle is the only writer of a try's state (and of a run's).

Read from the source, not from a run: a write that some path reaches rarely
(a sweep, an outage, a hand-made clear) would escape any test that has to
drive it. Outside lifecycle.py no module may
- assign a try's or run's state fields on an object (``ti.state = ...``),
- issue an UPDATE on the task-instance, try, reschedule or run tables,
- open a try's history row or a reschedule row (``TaskTry(...)``),
- hide such an UPDATE in SQL text.
Creating a task instance (state ``none``) or a run is not a transition: allowed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowsched"
WRITER = PACKAGE / "lifecycle.py"
TABLES = {"TaskInstance", "TaskTry", "TaskReschedule", "DagRun"}
HISTORY_ROWS = {"TaskTry", "TaskReschedule"}
# What a transition changes, on an instance, its try record or its run (a duration is
# only ever written with an end_date; left out, it would flag every timed report).
STATE_FIELDS = {
    "state",
    "try_number",
    "max_tries",
    "lost_count",
    "next_retry_at",
    "scheduled_at",
    "queued_at",
    "start_date",
    "end_date",
    "last_heartbeat",
    "hostname",
    "worker_nodename",
    "pid",
    "queued_by_job_id",
    "error",
}
RAW_UPDATE = re.compile(r"\bupdate\s+`?(task_instance|task_try|task_reschedule|dag_run)\b", re.I)
# (module, source of the assignment target): in-memory objects, never a database row.
ALLOWED = {
    # A callback's or template's context "ti" is a snapshot for user code, never a row.
    ("callback_runner.py", "context['ti'].state"),
    ("task_callbacks.py", "context['ti'].state"),
    ("task_runner.py", "ti.try_number"),
}


def violations(source: str, module: str) -> list[str]:
    """Every write of try or run state in ``source``, as "module:line: what"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for attr in ast.walk(target):
                if (
                    isinstance(attr, ast.Attribute)
                    and isinstance(attr.ctx, ast.Store)
                    and attr.attr in STATE_FIELDS
                    and not (isinstance(attr.value, ast.Name) and attr.value.id == "self")
                    and (module, ast.unparse(attr)) not in ALLOWED
                ):
                    found.append(f"{module}:{node.lineno}: assigns {ast.unparse(attr)}")
        if isinstance(node, ast.Call):
            name = _called(node)
            first = node.args[0] if node.args else None
            names = {ast.unparse(first)} if first is not None else set()
            if isinstance(first, ast.Attribute):  # models.TaskInstance, TaskTry.__table__
                names |= {first.attr, ast.unparse(first.value)}
            if name == "update" and names & TABLES:
                found.append(
                    f"{module}:{node.lineno}: {ast.unparse(node.func)}({ast.unparse(first)})"
                )
            if name in HISTORY_ROWS:
                found.append(f"{module}:{node.lineno}: opens a {name} row")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and RAW_UPDATE.search(node.value)
        ):
            found.append(f"{module}:{node.lineno}: SQL text updates a state table")
    return found


def _called(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def test_no_module_but_lifecycle_writes_try_or_run_state():
    found = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != WRITER
        for problem in violations(path.read_text(), str(path.relative_to(PACKAGE)))
    ]
    assert found == [], "state written outside flowsched/lifecycle.py:\n" + "\n".join(found)


def test_the_allowed_exceptions_still_exist():
    """An exception outliving its line would quietly allow the next write there."""
    for module, target in ALLOWED:
        tree = ast.parse((PACKAGE / module).read_text())
        written = {
            ast.unparse(target)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            for target in node.targets
        }
        assert target in written, (module, target)


@pytest.mark.parametrize(
    "source",
    [
        'ti.state = "scheduled"',
        "self.ti.end_date = now",
        "run.state, run.end_date = 'running', None",
        "ti.max_tries += 1",
        "session.execute(update(TaskInstance).values(state='none'))",
        "session.execute(sa.update(DagRun).values(state='failed'))",
        "session.execute(update(TaskTry.__table__))",
        "session.execute(update(models.TaskInstance))",
        "session.add(TaskTry(task_instance_id=1, try_number=2))",
        "session.execute(text('UPDATE task_instance SET state = :s'))",
    ],
)
def test_the_check_catches_each_kind_of_write(source):
    assert violations(source, "m.py"), source


@pytest.mark.parametrize(
    "source",
    [
        "self.end_date = end_date",  # a DAG's own attribute
        "dag.next_run_create_after = when",
        "job.latest_heartbeat = now",
        "session.execute(update(Job).values(state='failed'))",
        "session.add(TaskInstance(state='none'))",  # created, not moved
        "if ti.state == 'running': pass",
    ],
)
def test_the_check_lets_other_writes_and_reads_pass(source):
    assert violations(source, "m.py") == [], source
