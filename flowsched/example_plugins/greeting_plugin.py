"""An example plugin: an operator, a template macro and a hook.

`flowsched standalone` copies this file into the plugins folder; DAG files
import from it directly (`from greeting_plugin import GreetOperator`).
"""

from __future__ import annotations

from typing import Any

from flowsched.operators.base import BaseOperator
from flowsched.plugins import FlowschedPlugin


def shout(text: str) -> str:
    """Template macro: ``{{ macros.shout("hi") }}``."""
    return text.upper() + "!"


class GreetingHook:
    """A hook: how an operator talks to an external system (here: formats a greeting)."""

    def __init__(self, salutation: str = "Hello") -> None:
        self.salutation = salutation

    def greet(self, name: str) -> str:
        return f"{self.salutation}, {name}"


class GreetOperator(BaseOperator):
    template_fields = ("name",)

    def __init__(self, task_id: str, name: str, **kwargs: Any) -> None:
        super().__init__(task_id, **kwargs)
        self.name = name

    def execute(self, context: dict[str, Any]) -> str:
        message = GreetingHook().greet(self.name)
        print(message)
        return message


class GreetingPlugin(FlowschedPlugin):
    name = "greeting"
    operators = [GreetOperator]
    hooks = [GreetingHook]
    macros = {"shout": shout}
