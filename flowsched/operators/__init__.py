"""Built-in operators."""

from flowsched.operators.base import BaseOperator
from flowsched.operators.bash import BashOperator
from flowsched.operators.python import PythonOperator

__all__ = ["BaseOperator", "BashOperator", "PythonOperator"]
