"""The Celery executor in one place: the app, the scheduler's executor, the worker
(start-up, task body, recovery, metrics), inspection and remote control, and the
``flowsched celery`` CLI commands.

Named after the library it wraps; inside this package ``import celery`` still
means the Celery library (imports are absolute).
"""
