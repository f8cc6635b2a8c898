"""Every passing variant, archived and served, answers like the same variant in-process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handlers.encode import predictions
from servekit.examples.data import LABELS
from servekit.build.variants import ARCHIVE_SUFFIX, runner_for
from support.serving import BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, run_archive_sh

pytestmark = pytest.mark.integration
INSTANCES = 32


# The CNN's variants cover every kind of artifact the handler loads (each a worker of its own, seconds of
# CPU to start); the MLP's twins of the same kinds run under `slow` (make nightly).
MODELS = [pytest.param("digits_cnn"), pytest.param("digits_mlp", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=MODELS)
def served_variants(request: pytest.FixtureRequest, live: LiveServer, model_store: Path,
                    variant_results) -> dict[str, object]:
    """Archive one model's passing non-FP32 variants with archive.sh and register them; archive name -> result.
    Unregistered afterwards, so the other model's workers do not share the cores with these."""
    passing = [r for r in variant_results if r.passed and r.family != "fp32" and r.model == request.param]
    result = run_archive_sh(model_store, *sorted({r.path.parent for r in passing}))
    assert result.returncode == 0, result.stderr
    archives = {}
    for r in passing:
        archive = f"{r.path.parent.name}_{ARCHIVE_SUFFIX[r.fmt]}"
        live.client.register(f"{archive}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
        archives[archive] = r
    yield archives
    for archive in archives:
        live.client.unregister(archive)


def test_all_passing_variants_are_served(served_variants) -> None:
    [model] = {r.model for r in served_variants.values()}
    assert len(served_variants) >= 8  # 9 variants beyond FP32, less any variant a gate rejected
    assert f"{model}_pt2e_int8_aoti" in served_variants


def test_served_outputs_equal_in_process_outputs(live: LiveServer, served_variants, built_models) -> None:
    for archive, variant in served_variants.items():
        x = built_models[variant.model].x_test[:INSTANCES]
        expected = predictions(runner_for(variant.path)(x), LABELS, top_k=3)
        served = live.client.predict_npy(archive, x)["predictions"]
        assert [p["class"] for p in served] == [p["class"] for p in expected], archive
        served_probs = np.array([[t["probability"] for t in p["top_k"]] for p in served])
        expected_probs = np.array([[t["probability"] for t in p["top_k"]] for p in expected])
        np.testing.assert_allclose(served_probs, expected_probs, atol=2e-6, err_msg=archive)
