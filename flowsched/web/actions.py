"""What operators do from the pages: trigger, pause, clear, mark, delete.

Every action is a POST (CSRF-checked in :mod:`flowsched.web.app`), needs a
role, and calls the same :mod:`flowsched.operations` function as the CLI, so
it behaves the same and writes the same audit row (actor ``web:<user>``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.exceptions import FlowschedError
from flowsched.state import TaskState
from flowsched.timezone import parse_datetime
from flowsched.web import queries
from flowsched.web.auth import actor, require, same_origin_path
from flowsched.web.param_form import FIELD_PREFIX, SHOWN_PREFIX, conf_from_form, form_fields
from flowsched.web.users import Role

bp = Blueprint("actions", __name__)


def _checked(name: str) -> bool:
    return request.form.get(name) in ("on", "true", "1", "yes")


def _back(default: str) -> Response:
    """Return to the page the form was on (same-site paths only)."""
    return redirect(same_origin_path(request.form.get("next")) or default)


def parse_conf(text: str) -> dict[str, Any] | None:
    """A run conf from a form or request: empty means none; must be a JSON object."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlowschedError(f"conf is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FlowschedError('conf must be a JSON object, like {"key": "value"}')
    return value


@bp.route("/dags/<dag_id>/trigger", methods=["GET", "POST"])
@require(Role.OP)
def trigger(dag_id: str) -> Any:
    with session_scope() as session:
        detail = queries.dag_detail(session, dag_id)
    form = {
        "conf": request.form.get("conf", ""),
        "run_id": request.form.get("run_id", "").strip(),
        "logical_date": request.form.get("logical_date", "").strip(),
    }
    specs = detail.serialized.data.get("param_specs", {})
    submitted = request.form if request.method == "POST" else None

    def page(error: str | None) -> str:
        return render_template(
            "trigger.html",
            detail=detail,
            form=form,
            fields=form_fields(specs, submitted),
            error=error,
            tab=None,
            prefix=FIELD_PREFIX,
            shown=SHOWN_PREFIX,
        )

    if request.method == "GET":
        return page(None)
    try:
        conf = parse_conf(form["conf"])
        if specs:
            # The param fields, then the raw JSON box's keys on top of them.
            conf = {**conf_from_form(specs, request.form), **(conf or {})} or None
        try:
            logical = parse_datetime(form["logical_date"]) if form["logical_date"] else None
        except ValueError as exc:
            raise FlowschedError(f"logical date: {exc}") from None
        run = operations.trigger_dag(
            dag_id, conf=conf, run_id=form["run_id"] or None, logical_date=logical, actor=actor()
        )
    except FlowschedError as exc:
        return page(str(exc)), 400
    flash(f"Triggered run {run.run_id}.", "success")
    return redirect(url_for("pages.dag_grid", dag_id=dag_id))


@bp.route("/dags/<dag_id>/pause", methods=["POST"])
@require(Role.OP)
def pause(dag_id: str) -> Response:
    paused = _checked("paused")
    operations.set_paused(dag_id, paused, actor=actor())
    flash(f"{'Paused' if paused else 'Unpaused'} {dag_id}.", "success")
    return _back(url_for("pages.dag_grid", dag_id=dag_id))


@bp.route("/dags/<dag_id>/clear", methods=["POST"])
@require(Role.OP)
def clear(dag_id: str) -> Response:
    run_id = request.form.get("run_id") or None
    task_id = request.form.get("task_id") or None
    map_index = request.form.get("map_index", type=int)
    try:
        result = operations.clear_tasks(
            dag_id,
            task_regex=f"^{re.escape(task_id)}$" if task_id else None,
            run_id=run_id,
            only_failed=_checked("only_failed"),
            upstream=_checked("upstream"),
            downstream=_checked("downstream"),
            past=_checked("past"),
            future=_checked("future"),
            actor=actor(),
            map_indexes=[map_index] if map_index is not None and map_index >= 0 else None,
        )
    except FlowschedError as exc:
        flash(f"Nothing cleared: {exc}", "error")
    else:
        count = len(result.cleared)
        names = ", ".join(sorted({task for _, task in result.cleared})[:8])
        flash(
            f"Cleared {count} task instance(s){': ' + names if names else ''}; "
            "the scheduler will run them again."
            if count
            else "Nothing to clear.",
            "success" if count else "info",
        )
    default = (
        url_for("pages.run_page", dag_id=dag_id, run_id=run_id)
        if run_id
        else url_for("pages.dag_grid", dag_id=dag_id)
    )
    return _back(default)


@bp.route("/dags/<dag_id>/mark", methods=["POST"])
@require(Role.ADMIN)
def mark(dag_id: str) -> Response:
    run_id = request.form.get("run_id", "")
    task_id = request.form.get("task_id", "")
    state_text = request.form.get("state", "")
    default = url_for("pages.task_page", dag_id=dag_id, run_id=run_id, task_id=task_id)
    if state_text not in (TaskState.SUCCESS.value, TaskState.FAILED.value):
        flash("A task can only be marked success or failed.", "error")
        return _back(default)
    try:
        changed = operations.mark_tasks(
            dag_id,
            run_id,
            task_id,
            TaskState(state_text),
            upstream=_checked("upstream"),
            downstream=_checked("downstream"),
            past=_checked("past"),
            future=_checked("future"),
            actor=actor(),
        )
    except FlowschedError as exc:
        flash(f"Not marked: {exc}", "error")
    else:
        names = ", ".join(sorted({task for _, task in changed})[:8])
        flash(
            f"Marked {len(changed)} task instance(s) {state_text}: {names}."
            if changed
            else f"Nothing to mark: already {state_text}.",
            "success" if changed else "info",
        )
    return _back(default)


@bp.route("/dags/<dag_id>/delete", methods=["POST"])
@require(Role.ADMIN)
def delete(dag_id: str) -> Response:
    if request.form.get("confirm", "") != dag_id:
        flash("Type the DAG id exactly to confirm the deletion.", "error")
        return redirect(url_for("pages.delete_confirm", dag_id=dag_id))
    try:
        result = operations.delete_dag(dag_id, force=_checked("force"), actor=actor())
    except FlowschedError as exc:
        flash(f"Not deleted: {exc}", "error")
        return redirect(url_for("pages.delete_confirm", dag_id=dag_id))
    rows = sum(result.counts.values())
    flash(
        f"Deleted DAG {dag_id} ({rows} rows). It comes back at the next parse "
        "if its file is still in the DAGs folder.",
        "success",
    )
    return redirect(url_for("pages.dags"))
