"""Dynamic task mapping: one task per item, known at parse time or when an upstream ends.

``add_one`` maps over a literal list (three copies known when the file is parsed);
``double`` maps over ``add_one``'s results, expanded by the scheduler once those are
stored; ``total`` is the reduce step and gets every result in map_index order.
``echo`` maps an operator with ``partial``/``expand`` and ``greet`` with
``expand_kwargs``; ``{{ ti.map_index }}`` renders per copy.
"""

from datetime import datetime

from flowsched import DAG, BashOperator, task

with DAG(
    "example_dynamic_task_mapping",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    tags=["example"],
    description="Map over a list, over an upstream's results, then reduce.",
) as dag:

    @task
    def add_one(x: int) -> int:
        return x + 1

    @task
    def double(x: int, factor: int) -> int:
        return x * factor

    @task
    def total(values: list[int]) -> int:
        """The reduce step: every copy's result, in map_index order."""
        print(f"values={list(values)}")
        return sum(values)

    total(double.partial(factor=2).expand(x=add_one.expand(x=[1, 2, 3])))

    BashOperator.partial(task_id="echo", bash_command="echo copy {{ ti.map_index }}: $WORD").expand(
        env=[{"WORD": "alpha"}, {"WORD": "beta"}]
    )
    BashOperator.partial(task_id="greet").expand_kwargs(
        [{"bash_command": "echo hello"}, {"bash_command": "echo $WHO", "env": {"WHO": "world"}}]
    )
