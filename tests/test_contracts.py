"""Each contract has one source: the docs are generated from the code, or checked against it."""

from __future__ import annotations

from pathlib import Path

from flowsched.config import OPTIONS, REFERENCE_START, render_reference, replace_reference

CONTRACTS = Path(__file__).resolve().parent.parent / "docs" / "contracts.md"


def test_config_reference_in_docs_is_generated_from_options() -> None:
    document = CONTRACTS.read_text(encoding="utf-8")
    assert REFERENCE_START in document
    assert replace_reference(document) == document, (
        "docs/contracts.md's config reference differs from flowsched.config.OPTIONS: "
        "run scripts/gen-docs and commit the result"
    )


def test_reference_lists_every_option_once() -> None:
    rows = [line for line in render_reference().splitlines() if line.startswith("| ")][1:]
    rows = [row for row in rows if not row.startswith("| ---")]
    listed = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows]
    expected = [(section, key) for section, options in OPTIONS.items() for key in options]
    assert listed == expected


def test_the_executor_payload_module_imports_no_database_code():
    import ast

    import flowsched.workloads

    tree = ast.parse(Path(flowsched.workloads.__file__).read_text())
    imported = [
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert imported and not [
        name for name in imported if name.startswith(("sqlalchemy", "flowsched"))
    ], imported
