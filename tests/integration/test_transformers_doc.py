"""docs/transformers.md runs as written: every bash block, in order, in a scratch folder holding what the
repository root holds for it (archive.sh, handlers/, config.properties), with only the ports moved to free ones
and a TorchServe of its own (its own TMPDIR, stopped by the page's last command or here). README.md's
"Serve a transformers checkpoint" blocks are lines of this page (tests/unit/test_docs_links.py checks), so they
run here too."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.serve.torchserve import REPO_ROOT, Ports, render_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DOC = REPO_ROOT / "docs" / "transformers.md"
DOC_PORTS = {"8080": "inference", "8081": "management"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash(?: slow)?\n(.*?)```", text, re.S)


def test_the_page_is_left_to_this_test() -> None:
    from test_docs_run import PAGES  # the generic harness must not run it a second time

    assert DOC not in PAGES


def test_the_transformers_page_runs_as_written(tmp_path: Path) -> None:
    ports = Ports.free()
    script = "\n".join(bash_blocks(DOC.read_text()))
    for port, name in DOC_PORTS.items():
        assert f"127.0.0.1:{port}" in script
        script = script.replace(f"127.0.0.1:{port}", f"127.0.0.1:{getattr(ports, name)}")
    shutil.copy(REPO_ROOT / "archive.sh", tmp_path / "archive.sh")
    shutil.copytree(REPO_ROOT / "handlers", tmp_path / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "config.properties").write_text(render_config((REPO_ROOT / "config.properties").read_text(), ports))
    (tmp_path / "ts_tmp").mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "TMPDIR": str(tmp_path / "ts_tmp"),
           "TEMP": str(tmp_path / "ts_tmp")}
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=900)
    finally:  # the page's server keeps its pid file in a folder under ours (mktemp -d): stop it if the page did not
        for pid_file in (tmp_path / "ts_tmp").rglob(".model_server.pid"):
            subprocess.run(["torchserve", "--stop"], cwd=tmp_path, capture_output=True, timeout=60,
                           env={**env, "TMPDIR": str(pid_file.parent), "TEMP": str(pid_file.parent)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"predictions"')]
    assert len(answers) == 3, result.stdout[-3000:]
    ner, qa, audio = (a["predictions"][0] for a in answers)
    groups = {(e["entity_group"], e["word"], e["start"], e["end"]) for e in ner["entities"]}
    assert ("PER", "john smith", 0, 10) in groups
    context = "john smith works in paris."
    assert context[qa["start"]:qa["end"]] == qa["answer"]
    assert audio["label"] in ("yes", "no", "up", "down", "silence")
    for name in ("my-ner", "my-qa", "my-audio"):
        assert f"validated {name}: TorchScript, ONNX match eager PyTorch" in result.stdout
