"""Hooks: clients of external systems, configured from connections."""

from flowsched.hooks.base import BaseHook

__all__ = ["BaseHook"]
