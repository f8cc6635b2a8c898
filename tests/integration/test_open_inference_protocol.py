"""Open Inference Protocol (KServe v2) JSON through the live server, whole batches included."""
from __future__ import annotations

import json

import numpy as np
import pytest

from servekit.measure.bad_inputs import v2_request
from support.models import eager_predictions
from support.serving import LiveServer, send_together

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("archive", ["digits_cnn_ts", "digits_mlp_onnx"])
def test_v2_requests_are_answered_in_v2_for_every_request_of_a_batch(live: LiveServer, built_models, archive) -> None:
    built = built_models[live.archives[archive]]
    x = built.x_test[:12]
    bodies = [(json.dumps({**v2_request(xi, built.contract.name), "id": f"req-{i}"}).encode(), "application/json")
              for i, xi in enumerate(x)]
    responses = send_together(live.client, archive, bodies)
    assert [r.status_code for r in responses] == [200] * len(x)
    expected = eager_predictions(built.model, x).tolist()
    for i, response in enumerate(responses):
        body = response.json()
        outputs = {o["name"]: o for o in body["outputs"]}
        assert body["id"] == f"req-{i}" and body["model_name"] == archive
        assert outputs["class"]["data"] == [expected[i]]
        assert np.isclose(sum(outputs["probabilities"]["data"]), 1.0, atol=1e-5)


def test_typed_client_speaks_v2_and_raises_on_4xx(live: LiveServer, built_models) -> None:
    from servekit.serve.client import TorchServeError

    built = built_models["digits_mlp"]
    answer = live.client.predict_v2("digits_mlp_ts", built.contract.name, built.x_test[:4], request_id="x")
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["id"] == "x" and outputs["class"]["data"] == eager_predictions(built.model, built.x_test[:4]).tolist()
    with pytest.raises(TorchServeError, match="this model's input is 'pixels'") as err:
        live.client.predict_v2("digits_mlp_ts", "nope", built.x_test[:1])
    assert err.value.status == 400
