"""README.md and docs/ hold together: every relative link and anchor resolves, every make target and
servekit subcommand and flag they name exists, every yaml and json block reads, and every block is
either run by a test or says why not (tests/integration/test_docs_run.py runs them)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from handlers.config import KNOWN_KEYS, HandlerConfig
from servekit.cli import build_parser
from servekit.serve.torchserve import REPO_ROOT
from support.docs import SUITE_ITSELF, Page, anchors, code, make_targets, read_page, relative_links, servekit_commands

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LANGS = {"bash", "python", "yaml", "json", "promql", "text"}
INPUT_KEYS = {"name", "shape", "dtype", "min", "max", "pad", "image"}  # what InputSpec.from_dict reads
MODEL_CONFIG_KEYS = {"minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout", "deviceType",
                     "parallelType", "handler"}


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


@pytest.fixture(scope="module")
def pages() -> dict[Path, Page]:
    return {path: read_page(path) for path in PAGES}


def makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):", text, re.M)}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_there_are_pages_and_the_readme_is_a_front_page() -> None:
    assert len(PAGES) >= 12
    assert (REPO_ROOT / "README.md").stat().st_size < 15 * 1024


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_relative_link_and_anchor_resolves(pages, path: Path) -> None:
    broken = []
    for target in relative_links(pages[path]):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(pages.get(resolved) or read_page(resolved)):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_make_target_named_exists(pages, path: Path) -> None:
    assert make_targets(code(pages[path])) - makefile_targets() == set()


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_servekit_subcommand_and_flag_named_exists(pages, path: Path) -> None:
    parsers = subparsers()
    wrong = []
    for command, flags in servekit_commands(code(pages[path])):
        if command not in parsers:
            wrong.append(f"servekit {command}: no such subcommand")
            continue
        known = {s for action in parsers[command]._actions for s in action.option_strings}
        wrong += [f"servekit {command} {flag}: no such option" for flag in flags if flag not in known]
    assert wrong == []


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_block_is_run_or_says_why_not(pages, path: Path) -> None:
    for block in pages[path].blocks:
        assert block.lang in LANGS, f"{block.where}: a fence needs a language ({sorted(LANGS)})"
        if block.lang in ("promql", "text"):
            assert block.not_run, f"{block.where}: {block.lang} blocks are not run; say why above it"
        assert not (block.not_run and block.slow), f"{block.where}: slow or not run, not both"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_yaml_blocks_are_model_configs_and_json_blocks_read(pages, path: Path) -> None:
    for block in pages[path].blocks:
        if block.lang == "json":
            json.loads(block.text)
        if block.lang != "yaml":
            continue
        config = yaml.safe_load(block.text)
        assert set(config) <= MODEL_CONFIG_KEYS, f"{block.where}: {sorted(set(config) - MODEL_CONFIG_KEYS)}"
        section = config.get("handler", {})
        assert set(section) <= KNOWN_KEYS, f"{block.where}: unknown handler keys {sorted(set(section) - KNOWN_KEYS)}"
        for spec in section.get("inputs", [section["input"]] if "input" in section else []):
            assert set(spec) <= INPUT_KEYS, f"{block.where}: unknown input keys {sorted(set(spec) - INPUT_KEYS)}"
        if "input" in section or "inputs" in section:
            HandlerConfig.from_model_yaml(config)  # raises ConfigError with the reason


def test_the_checks_catch_what_they_claim(tmp_path: Path) -> None:
    """A broken link, a missing anchor, an unknown target, subcommand and flag, a block without a reason."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-section) [gone](missing.md) [no anchor](other.md#nope)\n\n"
                    "Run `make no-such-target`, `servekit export --no-such-flag` and `servekit nothing`.\n\n"
                    "```promql\nup\n```\n")
    parsed = read_page(page)
    targets = relative_links(parsed)
    assert targets == ["other.md#a-section", "missing.md", "other.md#nope"]
    assert "nope" not in anchors(read_page(tmp_path / "other.md")) and "a-section" in anchors(read_page(tmp_path / "other.md"))
    assert "no-such-target" in make_targets(code(parsed)) - makefile_targets()
    assert ("export", ("--no-such-flag",)) in servekit_commands(code(parsed))
    assert ("nothing", ()) in servekit_commands(code(parsed))
    assert parsed.blocks[0].not_run is None


def test_the_reference_has_a_section_for_every_subcommand() -> None:
    reference = read_page(REPO_ROOT / "docs" / "reference.md")
    assert {f"servekit-{name}" for name in subparsers()} <= anchors(reference)


def test_the_suite_the_docs_leave_out_is_what_ci_runs() -> None:
    """The harness does not run `make test` from inside the suite; CI does, exactly that."""
    assert (REPO_ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    assert SUITE_ITSELF.sub("skipped", "make test\nmake demo\n") == "skipped\nmake demo\n"


OWN_TESTS = {  # the pages with own-test blocks: the test that runs them, and the page it runs them as part of
    "README.md": ("tests/integration/test_transformers_doc.py", "docs/transformers.md"),
    "docs/tuning.md": ("tests/integration/test_docs_performance.py", None),
    "docs/performance.md": ("tests/integration/test_docs_performance.py", None),
}


def test_every_own_test_block_is_run_by_a_named_test(pages) -> None:
    """The generic harness leaves own-test blocks alone, so each must be run elsewhere: README's transformers
    commands stand, line for line, in docs/transformers.md (which its test runs); the others are read by the
    test named here."""
    for path, page in pages.items():
        blocks = [b for b in page.blocks if b.own_test]
        if not blocks:
            continue
        assert page_id(path) in OWN_TESTS, f"{page_id(path)} has own-test blocks but no test is said to run them"
        test_file, runner = OWN_TESTS[page_id(path)]
        assert path.name in (REPO_ROOT / test_file).read_text(), f"{test_file} does not read {path.name}"
        if runner is None:
            continue
        ran = joined_lines("\n".join(b.text for b in pages[REPO_ROOT / runner].blocks if b.lang == "bash"))
        for block in blocks:
            for line in joined_lines(block.text):
                assert line in ran, f"{block.where}: {line!r} is not run by {runner}"


def joined_lines(script: str) -> list[str]:
    """A script's command lines, continuation lines joined, comments and blank lines left out."""
    text = re.sub(r"\\\n\s*", "", script)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
