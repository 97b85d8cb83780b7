"""Modules at the import paths Airflow DAG files use (``airflow.utils.*``)."""
