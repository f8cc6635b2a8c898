"""The commands of a documentation page, so a test runs them as written."""
from __future__ import annotations

import re
from pathlib import Path

from servekit.serve.torchserve import REPO_ROOT


def bash_blocks(page: str) -> list[str]:
    """Every ```bash block of ``docs/<page>``, in order."""
    return re.findall(r"```bash\n(.*?)```", (REPO_ROOT / "docs" / page).read_text(), re.S)
