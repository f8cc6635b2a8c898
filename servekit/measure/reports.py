"""Where every ``servekit`` report lands: ``NAME.json`` (the numbers) beside ``NAME.md`` (for people)."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(reports_dir: Path | None, name: str, document: dict, markdown: str) -> Path | None:
    """Write ``reports_dir/NAME.json`` and ``NAME.md``; returns the markdown file's path.

    Without a ``reports_dir`` the report is printed instead: commands write under reports/ only when their
    make target asks (``--reports-dir reports``), so a side run never rewrites a tracked report.
    """
    if reports_dir is None:
        print(markdown)
        print(f"({name} report printed, not written: pass --reports-dir DIR to keep it)")
        return None
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    path = reports_dir / f"{name}.md"
    path.write_text(markdown)
    return path
