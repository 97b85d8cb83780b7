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


def test_dag_page_shows_doc_md_and_display_name_escaped(sqlite_web, sqlite_home):
    sqlite_home.write_dag(
        "documented.py",
        '''
        """## Nightly load <script>alert(1)</script>"""
        from datetime import datetime
        from flowsched import DAG, EmptyOperator

        with DAG("documented", schedule=None, start_date=datetime(2026, 1, 1),
                 doc_md=__doc__, dag_display_name="Nightly load") as dag:
            EmptyOperator(task_id="only")
        ''',
    )
    assert not process_folder().errors
    text = sqlite_web.client("viewer").get("/dags/documented/graph").text
    assert '<pre class="doc-md">## Nightly load &lt;script&gt;alert(1)&lt;/script&gt;</pre>' in text
    assert '<div class="muted">Nightly load</div>' in text
