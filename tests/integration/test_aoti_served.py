"""The .pt2 archives (torch.export + AOTInductor), served by a real TorchServe, answer like the package in-process."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from handlers.encode import predictions
from servekit.serve.client import NPY_CONTENT_TYPE, npy_bytes
from servekit.examples.data import LABELS
from servekit.build.validate import aoti_runner
from support.serving import BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, batch_counters, mean_batch_size, send_together

pytestmark = pytest.mark.integration
CONCURRENT = 48


@pytest.fixture(scope="module")
def aoti_archives(live: LiveServer, built_models) -> Iterator[dict[str, str]]:
    """``<model>_aoti.mar`` (archive.sh built them into the session's store), registered with batching."""
    archives = {}
    for name in built_models:
        live.client.register(f"{name}_aoti.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
        archives[f"{name}_aoti"] = name
    yield archives
    for archive in archives:  # the session's server goes on serving other modules: leave it as we found it
        live.client.unregister(archive)


def test_served_pt2_equals_in_process_in_one_request(live: LiveServer, aoti_archives, built_models) -> None:
    for archive, name in aoti_archives.items():
        built = built_models[name]
        x = built.x_test[:32]
        expected = predictions(aoti_runner(built.directory / "model.pt2")(x), LABELS, top_k=3)
        served = live.client.predict_npy(archive, x)["predictions"]
        assert [p["class"] for p in served] == [p["class"] for p in expected], archive
        np.testing.assert_allclose([[t["probability"] for t in p["top_k"]] for p in served],
                                   [[t["probability"] for t in p["top_k"]] for p in expected], atol=2e-6, err_msg=archive)


def test_served_pt2_equals_in_process_under_concurrent_batches(live: LiveServer, aoti_archives, built_models) -> None:
    for archive, name in aoti_archives.items():
        built = built_models[name]
        x = built.x_test[:CONCURRENT]
        expected = aoti_runner(built.directory / "model.pt2")(x).argmax(axis=1)
        before = batch_counters(live.client, archive)
        answers = send_together(live.client, archive, [(npy_bytes(instance), NPY_CONTENT_TYPE) for instance in x])
        served = [a.json()["predictions"][0]["class"] for a in answers]
        assert all(a.status_code == 200 for a in answers) and served == list(expected), archive
        assert mean_batch_size(live.client, archive, before, len(x)) > 1, f"{archive}: no batch formed"
