"""Fixtures shared by unit and integration tests: tiny models exported into temporary folders."""
from __future__ import annotations

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
from support.built import BertBuild, BuiltModel
from support.shared import build_once


@pytest.fixture(scope="session")
def digits() -> DigitsSplit:
    return load_digits_split()


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory, worker_id: str, digits: DigitsSplit) -> dict[str, BuiltModel]:
    """Both demo models, trained (seconds) and exported once per test run."""
    return build_once(tmp_path_factory, worker_id, "build", lambda root: _build_demo_models(root, digits))


def _build_demo_models(root: Path, digits: DigitsSplit) -> dict[str, BuiltModel]:
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
def variant_results(tmp_path_factory: pytest.TempPathFactory, worker_id: str, built_models: dict[str, BuiltModel],
                    digits: DigitsSplit):
    """Every variant of both demo models, built next to the base exports and judged by the default gates."""
    return build_once(tmp_path_factory, worker_id, "variants", lambda _: _build_variants(built_models, digits))


def _build_variants(built_models: dict[str, BuiltModel], digits: DigitsSplit):
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
def any_models(tmp_path_factory: pytest.TempPathFactory, worker_id: str, built_models) -> dict[str, Path]:
    """A regressor, a two-output regressor, an embedder and a two-input text classifier, exported once.

    After the demo models: a handler loaded here sets torch's process-wide thread count, and the demo
    CNN trained under another count gives a static-QDQ variant just past its output tolerance.
    """
    from support.any_models import ANY_MODELS, export_any_model

    return build_once(tmp_path_factory, worker_id, "any_models",
                      lambda root: {name: export_any_model(model, root) for name, model in ANY_MODELS.items()})


@pytest.fixture(scope="session")
def bert_build(tmp_path_factory: pytest.TempPathFactory, worker_id: str, built_models) -> BertBuild:
    """transformers' BertForSequenceClassification (tiny config, random init) trained for seconds on the
    synthetic topic task, then `servekit export` (two int64 inputs, length 1..64) and `servekit variants`."""
    return build_once(tmp_path_factory, worker_id, "bert", _build_bert)


def _build_bert(root: Path) -> BertBuild:
    import json

    from servekit.cli import main
    from servekit.examples.text_model import LABELS, VOCAB_SIZE, prepare_text_task

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
def image_model(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny image classifier, exported with declared preprocessing (support.image_models)."""
    from support.image_models import export_tiny_vision

    return build_once(tmp_path_factory, worker_id, "image_models", export_tiny_vision)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """The new tasks and bodies from tiny save_pretrained folders, exported once per run with --transformers:
    a trained NER model, an extractive QA model, an image and an audio classifier, a mean-pooled embedder."""
    from servekit.examples.zoo import export_checkpoint

    def export_all(root: Path) -> dict:
        return {name: export_checkpoint(name, root, trained=name == "bert-ner")
                for name in ("bert-ner", "bert-qa", "vit", "wav2vec2", "bert-embedder")}

    return build_once(tmp_path_factory, worker_id, "checkpoints", export_all)


# `make check` runs the unit tests that need no model build: these fixtures build or export models (seconds
# to minutes), and these tests export, compile or start pytest themselves.
HEAVY_FIXTURES = {"built_models", "variant_results", "any_models", "bert_build", "image_model", "mlp_handler",
                  "checkpoints"}
HEAVY_FILES = {"test_aoti.py", "test_cli_export.py", "test_live_requirements.py", "test_build_atomic.py",
               "test_validate.py", "test_optimize.py", "test_ort_telemetry.py", "test_backend_threads.py",
               "test_cli_help.py", "test_any_model_handler.py", "test_text_in.py", "test_text_model.py",
               "test_image_handler.py", "test_deploy_manifests.py", "test_backend_devices.py"}
HEAVY_TESTS = {"test_image_options_make_the_only_input_an_image", "test_export_refuses_image_options_that_disagree_with_the_input"}
# The order pytest-xdist hands out files (make test: --dist loadfile --no-loadscope-reorder; the workers
# take them alternately): long files first, those that wait for the demo models (built once, minutes on a
# loaded machine) alternating with long ones that do not, so no worker idles while the models are built.
NEEDS_DEMO_MODELS = ("test_composition_served.py", "test_variants.py", "test_variants_served.py", "test_bert_served.py",
                     "test_any_model_served.py", "test_reliability.py", "test_images_served.py", "test_docs_run.py",
                     "test_text_model.py", "test_aoti_served.py", "test_container_start.py", "test_serving.py")
INDEPENDENT = ("test_transformers_served.py", "test_zoo.py", "test_aoti.py", "test_cli_export.py", "test_image.py",
               "test_image_handler.py", "test_wheel.py", "test_live_requirements.py", "test_cli_help.py", "test_backend_threads.py", "test_ort_telemetry.py",
               "test_deploy_manifests.py", "test_validate.py", "test_build_atomic.py")
LONG_FILES = tuple(name for pair in zip(NEEDS_DEMO_MODELS, INDEPENDENT) for name in pair)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in HEAVY_FILES
                or item.originalname in HEAVY_TESTS or item.get_closest_marker("integration")):
            item.add_marker(pytest.mark.heavy)
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
