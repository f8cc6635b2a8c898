"""Read README.md and docs/*.md as the tests need them: fenced blocks with what their fences say, links
and anchors, and the make targets and servekit commands they name; build a runnable script of a page.

How a page tells the harness what to do with a block (docs/testing.md, "The docs are tested"):
- ```bash / ```python blocks run in page order in one shell, in a copy of the checkout;
- ```python file=PATH is a file the reader saves: written to PATH, not run;
- a word ``slow`` in the fence (```bash slow) runs the block only under the ``slow`` marker;
- a word ``own-test`` in the fence leaves the block to a test of its own, which asserts on what it writes
  (docs/tuning.md, docs/performance.md: tests/integration/test_docs_performance.py);
- a visible line ``> **Not run by the tests:** why`` right above a block skips it, and must say why;
- ```yaml blocks are read as model-config.yaml; ```json blocks as JSON.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\n]*)$")
NOT_RUN = re.compile(r"^\s*> \*\*Not run by the tests:\*\* (?P<why>\S.*)$")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\((?P<target>[^)\s]+)\)|!\[[^\]\n]*\]\((?P<image>[^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) +(?P<text>.+?) *#*$")
MAKE = re.compile(r"(?:^|[\s`(;&|])make +(?P<target>[a-z][a-z0-9-]*)")
SERVEKIT = re.compile(r"(?m)(?:^\s*|(?:[;&|]|\$\()\s*|= *)(?:[\w./-]*/)?servekit +(?P<rest>[a-z][^`\n]*)")
RUNNABLE = ("bash", "python")
# `make test` inside a test would run the suite again: the harness leaves it to .ci/run (checked by a test).
SUITE_ITSELF = re.compile(r"(?m)^make (test|nightly|docs-check)\b.*$")
TORCHSERVE_PORTS = {8080: "inference", 8081: "management", 8082: "metrics"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, the other words of its fence, its text and line."""

    page: Path
    line: int
    lang: str
    words: tuple[str, ...]
    text: str
    not_run: str | None = None  # why, when the page says the tests do not run it

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def slow(self) -> bool:
        return "slow" in self.words

    @property
    def own_test(self) -> bool:
        return "own-test" in self.words

    @property
    def file(self) -> str | None:
        """PATH of ``file=PATH``: the block is a file the reader saves."""
        return next((w.split("=", 1)[1] for w in self.words if w.startswith("file=")), None)


@dataclass
class Page:
    path: Path
    text: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def prose(self) -> str:
        """The page without its fenced blocks (where inline code and links are read)."""
        lines, inside = [], False
        for line in self.text.splitlines():
            if FENCE.match(line):
                inside = not inside
                continue
            if not inside:
                lines.append(line)
        return "\n".join(lines)


def code(page: Page) -> str:
    """Where the page names commands: its shell blocks and its inline code spans."""
    spans = re.findall(r"`([^`\n]+)`", page.prose)
    return "\n".join([block.text for block in page.blocks if block.lang == "bash"] + spans)


def read_page(path: Path) -> Page:
    """A page and its fenced blocks."""
    text = path.read_text()
    page = Page(path, text)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match["info"].strip():
            i += 1
            continue
        indent, (lang, *words) = len(match["indent"]), match["info"].split()
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^ {{0,{indent}}}```\s*$", lines[j]):
            body.append(lines[j][indent:] if not indent or lines[j][:indent].isspace() else lines[j].lstrip())
            j += 1
        page.blocks.append(Block(path, i + 1, lang, tuple(words), "\n".join(body) + "\n", not_run_reason(lines, i)))
        i = j + 1
    return page


def not_run_reason(lines: list[str], fence: int) -> str | None:
    """The reason in a ``> **Not run by the tests:** ...`` line just above the fence (blank lines allowed)."""
    k = fence - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    match = NOT_RUN.match(lines[k]) if k >= 0 else None
    return match["why"].strip() if match else None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Page) -> set[str]:
    """Every heading's anchor on the page (repeated headings get -1, -2 as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for line in page.prose.splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match["text"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Page) -> list[str]:
    """Link and image targets in the prose that are not URLs of other sites."""
    targets = [m["target"] or m["image"] for m in LINK.finditer(page.prose)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def make_targets(text: str) -> set[str]:
    """Targets named as ``make TARGET``."""
    return {m["target"] for m in MAKE.finditer(text)}


def servekit_commands(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``servekit SUBCOMMAND --flag ...`` as named in text: (subcommand, the flags after it on its line,
    continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for match in SERVEKIT.finditer(joined):
        rest = match["rest"].split("#", 1)[0]
        words = rest.split()
        flags = tuple(w.split("=", 1)[0] for w in words[1:] if re.match(r"^--[a-z][a-z0-9-]*", w))
        flags = tuple(re.match(r"^--[a-z][a-z0-9-]*", f).group(0) for f in flags)
        found.append((words[0].rstrip(".,:;)"), flags))
    return found


def move_ports(text: str, ports: dict[str, int]) -> str:
    """TorchServe's documented addresses (127.0.0.1:8080/8081/8082) moved to the ports a test owns, and
    ``--ts-config config.properties`` to the same file with its listeners moved ($DOCS_TS_CONFIG)."""
    for port, role in TORCHSERVE_PORTS.items():
        text = re.sub(rf"(127\.0\.0\.1|localhost):{port}\b", rf"\g<1>:{ports[role]}", text)
    return text.replace("--ts-config config.properties", '--ts-config "$DOCS_TS_CONFIG"')


def script(blocks: list[Block], ports: dict[str, int], python: str = ".venv/bin/python") -> str:
    """One bash script running the blocks in order, as a reader would in one terminal."""
    parts = ["set -euo pipefail"]
    for block in blocks:
        parts.append(f"echo {shlex.quote('>>> ' + block.where)} >&2")
        text = SUITE_ITSELF.sub(r": # \g<0>: the test suite itself, run by .ci/run", move_ports(block.text, ports))
        if block.file:
            parts.append(f"mkdir -p \"$(dirname {shlex.quote(block.file)})\"\n"
                         f"cat > {shlex.quote(block.file)} <<'DOCS_FILE'\n{text}DOCS_FILE")
        elif block.lang == "python":
            parts.append(f"{python} - <<'DOCS_PYTHON'\n{text}DOCS_PYTHON")
        else:
            parts.append(text)
    return "\n".join(parts) + "\n"
