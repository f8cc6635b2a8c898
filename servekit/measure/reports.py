"""Where every ``servekit`` report lands: ``NAME.json`` (the numbers) beside ``NAME.md`` (for people)."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(reports_dir: Path, name: str, document: dict, markdown: str) -> Path:
    """Write ``reports_dir/NAME.json`` and ``NAME.md``; returns the markdown file's path."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    path = reports_dir / f"{name}.md"
    path.write_text(markdown)
    return path
