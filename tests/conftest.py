"""Fixtures shared by unit and integration tests: tiny models exported into temporary folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.config import InputContract
from servekit.build.model_dir import ModelBuild, build_model_dir
from servekit.examples.data import LABELS, DigitsSplit, load_digits_split
from servekit.build.model_config import Batching
from servekit.examples.models import DEMO_MODELS
from servekit.examples.train import train_demo


@dataclass(frozen=True)
class BuiltModel:
    """A demo model trained and exported into ``directory`` (model.pt, model.onnx, model-config.yaml)."""

    name: str
    directory: Path
    model: torch.nn.Module
    contract: InputContract
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def digits() -> DigitsSplit:
    return load_digits_split()


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory, digits: DigitsSplit) -> dict[str, BuiltModel]:
    """Both demo models, trained (seconds) and exported once per test session."""
    root = tmp_path_factory.mktemp("build")
    built = {}
    for name, spec in DEMO_MODELS.items():
        train_demo(spec, digits, root / name)
        model = spec.factory()
        model.load_state_dict(torch.load(root / name / "weights.pt", weights_only=True))
        model.eval()
        contract = InputContract(spec.input_name, spec.input_shape, "float32", 0.0, 1.0)
        x_test = digits.x_test.reshape(-1, *spec.input_shape)
        build_model_dir(model, ModelBuild(name, contract, LABELS, Batching(batch_size=16, max_batch_delay_ms=20)),
                        x_test, root / name)
        built[name] = BuiltModel(name, root / name, model, contract, x_test, digits.y_test)
    return built


@pytest.fixture(scope="session")
def variant_results(built_models: dict[str, BuiltModel], digits: DigitsSplit):
    """Every variant of both demo models, built next to the base exports and judged by the default gates."""
    from servekit.build.export import ExportSpec
    from servekit.build.variants import Gates, VariantInputs, build_variants, judge, prune_empty_family_dirs

    results = []
    for name, built in built_models.items():
        spec = DEMO_MODELS[name]
        inputs = VariantInputs(name, built.model, ExportSpec(spec.input_name, spec.input_shape), built.directory,
                               digits.x_train.reshape(-1, *spec.input_shape), digits.y_train, built.x_test, built.y_test)
        mine = build_variants(inputs, built.directory.parent)
        judge(mine, built.model, built.x_test, built.y_test, Gates())
        prune_empty_family_dirs(mine)
        results.extend(mine)
    return results


@pytest.fixture(scope="session")
def any_models(tmp_path_factory: pytest.TempPathFactory, built_models) -> dict[str, Path]:
    """A regressor, a two-output regressor, an embedder and a two-input text classifier, exported once.

    After the demo models: a handler loaded here sets torch's process-wide thread count, and the demo
    CNN trained under another count gives a static-QDQ variant just past its output tolerance.
    """
    from support.any_models import ANY_MODELS, export_any_model

    root = tmp_path_factory.mktemp("any_models")
    return {name: export_any_model(model, root) for name, model in ANY_MODELS.items()}


@dataclass(frozen=True)
class BertBuild:
    """The BERT-style text classifier trained, exported and its variants gated, as a user would run it."""

    task: object  # servekit.examples.text_model.TextTask
    build_dir: Path
    variants: list[dict]


@pytest.fixture(scope="session")
def bert_build(tmp_path_factory: pytest.TempPathFactory, built_models) -> BertBuild:
    """transformers' BertForSequenceClassification (tiny config, random init) trained for seconds on the
    synthetic topic task, then `servekit export` (two int64 inputs, length 1..64) and `servekit variants`."""
    import json

    from servekit.cli import main
    from servekit.examples.text_model import LABELS, VOCAB_SIZE, prepare_text_task

    root = tmp_path_factory.mktemp("bert")
    task = prepare_text_task(root / "data")
    np.save(root / "data" / "labels.npy", task.test_labels)
    np.savez(root / "data" / "train.npz", **task.train_inputs)
    common = ["--factory", "servekit.examples.text_model:tiny_bert", "--weights", str(task.weights_path), "--name", "bert",
              "--build-dir", str(root / "build")]
    assert main(["export", *common, "--task", "classification", "--labels", ",".join(LABELS),
                 "--input", f"input_ids:int64:1..64:0..{VOCAB_SIZE - 1}", "--input", "attention_mask:int64:1..64:0..1",
                 "--heldout", str(task.heldout_path), "--tokenizer", str(task.tokenizer_path), "--atol", "1e-4",
                 "--batch-size", "16", "--max-batch-delay", "20", "--formats", "torchscript,onnx"]) == 0
    assert main(["variants", *common, "--heldout", str(task.heldout_path), "--heldout-labels",
                 str(root / "data" / "labels.npy"), "--calibration", str(root / "data" / "train.npz"),
                 "--model-store", str(root / "store"), "--reports-dir", str(root / "reports")]) == 0
    rows = json.loads((root / "reports" / "variants.json").read_text())["variants"]
    return BertBuild(task, root / "build", rows)


@pytest.fixture(scope="session")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image classifier, exported with declared preprocessing (support.image_models)."""
    from support.image_models import export_tiny_vision

    return export_tiny_vision(tmp_path_factory.mktemp("image_models"))


SERVER_EXIT_GRACE_S = 30.0  # TorchServe takes up to this long to stop its workers after SIGTERM


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every live test stops what it starts: a TorchServe (or its Java frontend, or a worker) that this session
    started and that still runs once every fixture is torn down fails the run, naming the process."""
    import time

    import psutil

    def servers() -> list[psutil.Process]:
        found = []
        for child in psutil.Process().children(recursive=True):
            try:
                command = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "org.pytorch.serve" in command or "ts/model_service_worker.py" in command or "torchserve" in command:
                found.append(child)
        return found

    deadline = time.monotonic() + SERVER_EXIT_GRACE_S
    left = servers()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = servers()
    if left:
        print(f"\nlive tests left {len(left)} TorchServe process(es) running: "
              + ", ".join(f"pid {p.pid}" for p in left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
