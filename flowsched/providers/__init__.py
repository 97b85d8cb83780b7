"""Operators that talk to external systems; each imports its client library only when run.

That way a DAG file using, say, the DockerOperator parses on a scheduler or
webserver host that has neither the client library nor the service.
"""
