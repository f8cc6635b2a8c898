"""Every bash and python block of README.md and docs/ runs as written, in page order, in one shell, in a
copy of the checkout: the default run takes the short blocks, the `slow` run every block (make nightly,
make docs-check). Only TorchServe's documented addresses are moved to free ports (support.docs)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from servekit.examples.demo import write_samples
from servekit.serve.torchserve import REPO_ROOT, Ports, render_config, torchserve_available
from support.checkout import copy_checkout
from support.docs import RUNNABLE, Block, Page, read_page, script
from support.serving import require

pytestmark = pytest.mark.integration
ALL_PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
DIRECTIVE = re.compile(r"^<!-- docs-test: (?P<words>[a-z -]+) -->$", re.M)
SERVING = REPO_ROOT / "docs" / "serving.md"
DEFAULT_TIMEOUT_S, SLOW_TIMEOUT_S = 600, 3600
# What a run must print, beyond exiting 0 (curl -s exits 0 on a 4xx).
EXPECTED = {
    "README.md": ['"label":"setosa"', "expected [4] or [N, 4]", "training accuracy"],
    "docs/serving.md": ['"predictions"', '"model_name":"digits_mlp_ts"', "ts_inference_requests_total"],
}


def own_test(path: Path) -> bool:
    """A page marked ``<!-- docs-test: own-test -->`` is run, with assertions on its answers, by a test of its own
    (docs/transformers.md: tests/integration/test_transformers_doc.py)."""
    return any("own-test" in match["words"].split() for match in DIRECTIVE.finditer(path.read_text()))


PAGES = [p for p in ALL_PAGES if not own_test(p)]


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else path.name


def directives(page: Page) -> set[str]:
    return {word for match in DIRECTIVE.finditer(page.text) for word in match["words"].split()}


def runnable(page: Page, slow: bool) -> list[Block]:
    return [b for b in page.blocks if b.lang in RUNNABLE and b.not_run is None and not b.own_test and (slow or not b.slow)]


def server_blocks(word: str) -> list[Block]:
    return [b for b in read_page(SERVING).blocks if word in b.words]


def workspace(root: Path, page: Page, ports: Ports, request: pytest.FixtureRequest) -> Path:
    """A copy of the checkout, and what `make demo` leaves if the page asks for it."""
    work = copy_checkout(root / "checkout", with_venv=True)
    if "after-demo" in directives(page):  # the suite's own demo builds, only for the pages that need them
        built_models, digits = request.getfixturevalue("built_models"), request.getfixturevalue("digits")
        model_store = request.getfixturevalue("model_store")
        for built in built_models.values():
            shutil.copytree(built.directory, work / "build" / built.name)
        write_samples(work / "build" / "samples", digits)
        (work / "model_store").mkdir(exist_ok=True)
        for mar in model_store.glob("digits_*.mar"):
            shutil.copy2(mar, work / "model_store" / mar.name)
    return work


def stop_leftovers(tmpdir: Path) -> None:
    """Stop any TorchServe a failed run left behind: only those whose pid file is under our TMPDIR."""
    for pid_file in tmpdir.rglob(".model_server.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(40):
                time.sleep(0.5)
                os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def run_page(path: Path, slow: bool, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    page = read_page(path)
    blocks = runnable(page, slow)
    if not blocks:
        pytest.skip(f"{path.name} has no {'' if slow else 'short '}block to run")
    if "with-server" in directives(page):
        blocks = server_blocks("start") + blocks + server_blocks("stop")
    if any("torchserve" in b.text for b in blocks):
        require(torchserve_available(), "Java 17 or the torchserve launcher (TorchServe needs both)")
    ports = Ports.free()
    work = workspace(tmp_path, page, ports, request)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TMPDIR"] = env["TEMP"] = str(tmpdir)  # a page's TorchServe: pid file and worker sockets apart from others'
    env["DOCS_TS_CONFIG"] = str(tmp_path / "config.properties")  # the checkout's, listeners on our ports
    (tmp_path / "config.properties").write_text(render_config((work / "config.properties").read_text(), ports))
    addresses = {"inference": ports.inference, "management": ports.management, "metrics": ports.metrics}
    try:
        result = subprocess.run(["bash", "-c", script(blocks, addresses)], cwd=work, env=env, capture_output=True,
                                text=True, timeout=SLOW_TIMEOUT_S if slow else DEFAULT_TIMEOUT_S)
    finally:
        stop_leftovers(tmpdir)
    started = re.findall(r"^>>> (\S+)$", result.stderr, re.M)
    assert result.returncode == 0, (f"block at {started[-1] if started else '?'} failed:\n{result.stdout[-3000:]}\n"
                                    f"{result.stderr[-3000:]}")
    for expected in EXPECTED.get(page_id(path), []):
        assert expected in result.stdout + result.stderr, f"{path.name}: {expected!r} not in its output"


@pytest.mark.timeout(SLOW_TIMEOUT_S)  # an after-demo page may build the demo models first (run alone)
@pytest.mark.parametrize("path", [p for p in PAGES if runnable(read_page(p), slow=False)], ids=page_id)
def test_the_short_blocks_of_each_page_run(path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run_page(path, False, tmp_path, request)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@pytest.mark.parametrize("path", [p for p in PAGES if runnable(read_page(p), slow=True)], ids=page_id)
def test_every_block_of_each_page_runs(path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run_page(path, True, tmp_path, request)


def test_the_harness_fails_a_page_whose_block_fails(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A failing command fails the test and names its block; a missing output fails it too."""
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```bash\necho one\n```\n\n```python\nraise SystemExit(3)\n```\n")
    with pytest.raises(AssertionError, match="page.md:7 failed"):
        run_page(page, False, tmp_path / "a", request)
