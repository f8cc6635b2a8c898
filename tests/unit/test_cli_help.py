"""The command line explains itself: every option has help, --version answers, and neither --help nor
--version imports torch or prints third-party noise."""
from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from servekit.cli import build_parser

SERVEKIT = str(Path(sys.executable).parent / "servekit")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers by name."""
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options_without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
            if not a.help and not isinstance(a, argparse._SubParsersAction)]


def test_every_option_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    missing = {name: options_without_help(sub) for name, sub in subcommands(parser).items()}
    missing["servekit"] = options_without_help(parser)
    assert {name: opts for name, opts in missing.items() if opts} == {}
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    assert all(choice.help for choice in commands._choices_actions), "every subcommand says what it does"


def test_the_walk_sees_a_missing_help_text() -> None:
    """The check above can fail: an option added without help is reported by name."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet-option")
    parser.add_argument("--explained", help="says what it does")
    assert options_without_help(parser) == ["--quiet-option"]


def test_version_is_the_installed_distributions() -> None:
    result = subprocess.run([SERVEKIT, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"servekit {version('servekit')}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["export", "--help"], ["variants", "--help"],
                                  ["gpu-report", "--help"], ["archive", "--help"]])
def test_help_and_version_import_no_torch_and_print_no_noise(argv: list[str]) -> None:
    """torch costs a second and brings torchao's and pytree's warnings; answering --help needs neither."""
    probe = ("import sys\nfrom servekit.cli import main\n"
             f"try:\n    main({argv!r})\nexcept SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
             "heavy = sorted(m for m in ('torch', 'torchao', 'onnxruntime', 'transformers') if m in sys.modules)\n"
             "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("HEAVY []"), result.stdout[-300:]
    assert result.stderr == ""


def test_pt2e_int8_loads_torchao_without_its_kernel_and_pytree_noise() -> None:
    """torchao is imported only where PT2E INT8 needs it, and its CUDA-kernel load failures and torch's
    pytree deprecation lines (printed on a CPU wheel) stay out of the user's terminal."""
    probe = ("import sys, numpy as np, torch\n"
             "from servekit.build.export import ExportSpec\n"
             "from servekit.build.optimize.quantize import pt2e_int8\n"
             "assert 'torchao' not in sys.modules\n"
             "model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()\n"
             "pt2e_int8(model, ExportSpec('x', (4,)), np.random.default_rng(0).random((8, 4), np.float32))\n"
             "assert 'torchao' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Failed to load" not in result.stderr and "_pytree" not in result.stderr, result.stderr
