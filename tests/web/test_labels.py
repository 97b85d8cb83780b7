"""Edge labels set with Label(...) are drawn on the graph page."""

from __future__ import annotations

import re

from flowsched.dag_processor import process_folder


def test_graph_shows_edge_labels(sqlite_web, sqlite_home):
    sqlite_home.write_dag(
        "labelled.py",
        """
        from datetime import datetime
        from flowsched import DAG, EmptyOperator, Label

        with DAG("labelled", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
            check, good, bad = (EmptyOperator(task_id=n) for n in ("check", "good", "bad"))
            check >> Label("valid <rows>") >> good
            check >> bad
        """,
    )
    assert not process_folder().errors
    text = sqlite_web.client("viewer").get("/dags/labelled/graph").text
    labels = re.findall(r'<text class="edge-label"[^>]*>([^<]*)</text>', text)
    assert labels == ["valid &lt;rows&gt;"]  # escaped, and only on the labelled edge
    assert "check → good: valid &lt;rows&gt;" in text
    assert text.count('class="edge"') == 2
