"""Branching and skipping on the Celery executor: real workers decide, the scheduler follows."""

from __future__ import annotations

from tests.distributed.conftest import Cluster


def test_branch_and_skip_on_celery_workers(cluster: Cluster) -> None:
    cluster.write_dag(
        "celery_branch",
        """
pick = BranchPythonOperator(task_id="pick", python_callable=lambda: "left")
left = BashOperator(task_id="left", bash_command="echo left")
right = BashOperator(task_id="right", bash_command="echo right")
skipper = BashOperator(task_id="skipper", bash_command="exit 99")
join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
after_skip = BashOperator(task_id="after_skip", bash_command="true")
pick >> [left, right] >> join
left >> skipper >> after_skip
""",
        extra="from flowsched import BranchPythonOperator, EmptyOperator",
    )
    run_id = cluster.trigger("celery_branch")
    assert cluster.wait_run("celery_branch", run_id) == "success"
    tis = cluster.tis("celery_branch", run_id)
    assert {task_id: ti.state for task_id, ti in tis.items()} == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
        "skipper": "skipped",
        "after_skip": "skipped",
        "join": "success",
    }
    # The branch ran on a worker; the skip it chose and the EmptyOperator never did.
    assert tis["pick"].worker_nodename in (cluster.a.nodename, cluster.b.nodename)
    assert tis["right"].try_number == 0 and tis["join"].try_number == 0
    assert [t.state for t in cluster.tries("celery_branch", run_id, "skipper")] == ["skipped"]
