"""Task logs in one place: their paths and the only code that opens them
(:mod:`~flowsched.task_logs.files`), the worker's log server and the tokens it
checks, and the client that reads a log locally or from the worker that wrote it.
"""
