"""A custom operator from the plugins folder, with a plugin macro in a templated field.

Needs `greeting_plugin.py` in the plugins folder (standalone puts it there).
"""

from datetime import datetime

from greeting_plugin import GreetOperator

from flowsched import DAG

with DAG("example_plugin", schedule=None, start_date=datetime(2026, 1, 1), tags=["example"]):
    GreetOperator(task_id="greet", name="{{ macros.shout(dag_id) }} on {{ ds }}")
