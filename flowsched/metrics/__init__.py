"""Metrics of every component: Prometheus ``/metrics`` ports and optional StatsD.

One module per component (``scheduler``, ``dag_processing``, ``worker``,
``web``), each owning its metric definitions and called from a few hooks in
that component; ``cluster`` reads the cluster-wide figures the scheduler
publishes; ``statsd`` sends Airflow's StatsD names. The names, ports and a
Prometheus/Grafana setup are in docs/monitoring.md.
"""
