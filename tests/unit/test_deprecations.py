"""torch 2.13 deprecates torch.jit and torch.ao.quantization: our calls say so once, in a line of ours, not per call."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch

from handlers.backends.torchscript import TorchScriptBackend
from servekit.build import deprecations
from servekit.build.export import ExportSpec, export_torchscript
from servekit.build.optimize.quantize import torch_dynamic_int8
from servekit.build.validate import torchscript_runner
from support.user_models import tiny_classifier

SPEC = ExportSpec("features", (4,))
RETIRING = (r"`torch\.jit\.", r"torch\.ao\.quantization is deprecated")


def _torch_deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    import re

    return [str(w.message) for w in caught if any(re.match(p, str(w.message)) for p in RETIRING)]


def test_torch_itself_warns_on_every_torch_jit_call() -> None:
    """The control: without our wrappers, torch warns per call (so the test below can fail)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(tiny_classifier().eval(), SPEC.example(), check_trace=False)
    assert _torch_deprecations(caught)


def test_our_torchscript_and_dynamic_int8_paths_say_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(deprecations, "_said", set())
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        for name in ("a.pt", "b.pt"):
            path = export_torchscript(tiny_classifier(), SPEC, tmp_path / name)
        torchscript_runner(path)
        TorchScriptBackend(path, None, threads=torch.get_num_threads())
        export_torchscript(torch_dynamic_int8(tiny_classifier()), SPEC, tmp_path / "int8.pt")
        torch_dynamic_int8(tiny_classifier())
    assert _torch_deprecations(caught) == []
    ours = [r.getMessage() for r in caplog.records if r.name == deprecations.__name__]
    assert ours == [deprecations.TORCHSCRIPT_RETIRING, deprecations.AO_QUANTIZATION_RETIRING]
    assert "model.pt2" in ours[0] and "docs/formats.md" in ours[0]
