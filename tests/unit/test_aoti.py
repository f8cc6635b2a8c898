"""model.pt2 (torch.export + AOTInductor): validated like the other formats, refused when wrong, skipped with
torch's reason when torch.export cannot capture the model, and run by its backend with the worker's threads."""
from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.backends import load_backend
from handlers.backends.aoti import CPU_FEATURE_PROBES, missing_cpu_features
from servekit.build.model_dir import VALIDATION_FILE
from servekit.cli import main
from servekit.examples.models import DigitsMLP
from servekit.build.validate import ExportValidationError, aoti_runner, validate_artifact
from support.models import eager_predictions

REPO = Path(__file__).resolve().parents[2]


def test_pt2_is_validated_at_every_batch_size_and_takes_any_batch(built_models) -> None:
    for built in built_models.values():
        report = json.loads((built.directory / VALIDATION_FILE).read_text())
        assert [(c["batch_size"], c["passed"]) for c in report["aoti"]] == [(1, True), (7, True), (64, True)]
        assert report["unsupported"] == {}
        run = aoti_runner(built.directory / "model.pt2")
        for size in (3, 130):  # neither the traced batch (2) nor a validated one; 130 > any batch compiled for
            x = np.ascontiguousarray(np.resize(built.x_test, (size, *built.x_test.shape[1:])))
            np.testing.assert_allclose(run(x), built.model(torch.from_numpy(x)).detach().numpy(), rtol=1e-3, atol=1e-5)


def test_a_pt2_of_another_model_is_refused_with_the_numbers(built_models) -> None:
    built = built_models["digits_mlp"]
    torch.manual_seed(1)
    other = DigitsMLP().eval()  # same architecture, other weights: what a stale or swapped export looks like
    with pytest.raises(ExportValidationError) as err:
        validate_artifact(other, "aoti", aoti_runner(built.directory / "model.pt2"), built.x_test)
    assert [f.batch_size for f in err.value.failures] == [1, 7, 64]
    assert "aoti" in str(err.value) and "max |diff|" in str(err.value)


def test_a_model_torch_export_cannot_capture_keeps_the_other_formats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_dir = tmp_path / "scaled"
    out_dir.mkdir()
    (out_dir / "model.pt2").write_bytes(b"a stale package from an earlier export")
    status = main(["export", "--factory", "support.user_models:item_scaled", "--random-weights", "--name", "scaled", "--task", "regression",
                   "--input-shape", "4", "--min", "-1", "--max", "1", "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "aoti         SKIPPED: torch.export cannot capture the model: GuardOnDataDependentSymNode" in out
    assert "user_models.py" in out  # torch's reason points at the user's line
    assert "validated scaled: TorchScript, ONNX match" in out
    assert {p.name for p in out_dir.iterdir()} >= {"model.pt", "model.onnx", "model-config.yaml"}
    assert not (out_dir / "model.pt2").exists()
    report = json.loads((out_dir / VALIDATION_FILE).read_text())
    assert "GuardOnDataDependentSymNode" in report["unsupported"]["aoti"] and "aoti" not in report


def test_without_a_cpp_compiler_the_pt2_is_skipped_with_how_to_fix_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from servekit.build.export import ExportSpec, export_and_validate
    from support.user_models import tiny_classifier

    monkeypatch.setenv("CXX", "no-such-g++")
    x = np.random.default_rng(0).uniform(-1, 1, size=(64, 4)).astype(np.float32)
    exported = export_and_validate(tiny_classifier(), ExportSpec("features", (4,)), tmp_path, x, formats=("onnx", "aoti"))
    assert "no C++ compiler" in exported.unsupported["aoti"] and "--formats torchscript,onnx" in exported.unsupported["aoti"]
    assert (tmp_path / "model.onnx").exists() and not (tmp_path / "model.pt2").exists()
    assert [c.passed for c in exported.comparisons["onnx"]] == [True, True, True]


def test_backend_runs_any_batch_on_the_cpu_with_the_configured_threads(built_models) -> None:
    built = built_models["digits_cnn"]
    before = torch.get_num_threads()
    backend = load_backend(built.directory / "model.pt2", None, threads=1)
    assert torch.get_num_threads() == before  # set around each batch, never left behind for the process
    assert "aotinductor .pt2 (compiled for cpu" in backend.describe() and "1 intra-op threads" in backend.describe()
    for size in (1, 7):
        assert list(backend.run(built.x_test[:size]).argmax(axis=1)) == list(eager_predictions(built.model, built.x_test[:size]))


def _threads_after_running(package: Path, threads: int) -> tuple[int, int]:
    code = ("import os, sys, numpy as np; from pathlib import Path; from handlers.backends import load_backend\n"
            "before = len(os.listdir('/proc/self/task'))\n"
            f"backend = load_backend(Path(sys.argv[1]), None, {threads})\n"
            "for _ in range(3): backend.run(np.zeros((64, 1, 8, 8), np.float32))\n"
            "print(before, len(os.listdir('/proc/self/task')))")
    done = subprocess.run([sys.executable, "-c", code, str(package)], cwd=REPO, capture_output=True, text=True, check=True)
    before, after = done.stdout.split()
    return int(before), int(after)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or (os.cpu_count() or 1) < 2, reason="needs Linux and 2 cores")
def test_compiled_kernels_follow_the_worker_thread_count(built_models) -> None:
    """AOTInductor bakes the compiling machine's thread count into its loops unless told otherwise; ours are not
    baked: with one thread no OpenMP team is started, with two it is (the control that shows the check can fail)."""
    package = built_models["digits_cnn"].directory / "model.pt2"
    before, after = _threads_after_running(package, threads=1)
    assert after == before
    before, after = _threads_after_running(package, threads=2)
    assert after > before


def test_cpu_package_on_a_gpu_worker_says_so(built_models, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A GPU worker (CUDA visible, gpu_id given) with a CPU package runs it on the CPU and logs why."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    built = built_models["digits_mlp"]
    before = torch.get_num_threads()
    with caplog.at_level(logging.WARNING, logger="handlers.backends.aoti"):
        backend = load_backend(built.directory / "model.pt2", 0, threads=before)
    assert "compiled for cpu: it runs on the CPU although this worker has GPU 0" in caplog.text
    assert backend.device == torch.device("cpu") and backend.run(built.x_test[:2]).shape == (2, 10)


def test_a_package_for_cpu_features_this_cpu_lacks_is_refused_by_name(built_models,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Run anyway, it would kill the worker with an illegal instruction; the machine here has what it was built for,
    so the CPU's probe for the package's first feature is made to say no."""
    package = built_models["digits_mlp"].directory / "model.pt2"
    isa = load_backend(package, None, threads=torch.get_num_threads()).cpu_isa
    feature = isa.split()[0]
    assert missing_cpu_features(isa) == [] and missing_cpu_features("SOMETHING_NEW") == []
    monkeypatch.setattr(torch.cpu, CPU_FEATURE_PROBES[feature], lambda: False)
    with pytest.raises(RuntimeError, match=f"compiled for a CPU with {isa}; this CPU lacks {feature}"):
        load_backend(package, None, threads=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_package_runs_on_the_worker_gpu(tmp_path: Path, built_models) -> None:
    from servekit.build.export import ExportSpec, capture, compile_aoti

    built = built_models["digits_cnn"]
    on_gpu = copy.deepcopy(built.model).to("cuda")
    path = compile_aoti(capture(on_gpu, ExportSpec("image", (1, 8, 8))), tmp_path / "model.pt2")
    backend = load_backend(path, 0, threads=1)
    assert backend.device == torch.device("cuda:0") and "compiled for cuda" in backend.describe()
    assert list(backend.run(built.x_test[:7]).argmax(axis=1)) == list(eager_predictions(built.model, built.x_test[:7]))


def test_a_two_input_model_with_a_dynamic_length_compiles_and_validates_at_every_length(tmp_path: Path) -> None:
    """The signature's dynamic dimensions become torch.export Dims shared across inputs, like ONNX's axes."""
    status = main(["export", "--factory", "support.user_models:masked_mean_text", "--random-weights", "--name", "text", "--task", "embedding",
                   "--input", "input_ids:int64:1..16:0..49", "--input", "attention_mask:int64:1..16:0..1",
                   "--formats", "aoti", "--build-dir", str(tmp_path)])
    assert status == 0
    report = json.loads((tmp_path / "text" / VALIDATION_FILE).read_text())
    assert {(c["batch_size"], c["length"]) for c in report["aoti"]} >= {(1, 1), (64, 16), (7, 8)}
    assert all(c["passed"] for c in report["aoti"])
