"""Fixtures for the handler driven through TorchServe's own Context, without a server."""
from __future__ import annotations

import pytest

from handlers.handler import InferenceHandler
from support.torchserve_context import ARTIFACTS, make_context


@pytest.fixture(params=ARTIFACTS)
def mlp_handler(request: pytest.FixtureRequest, built_models):
    """The demo MLP's handler, initialized as a worker does, once per serialized format."""
    built = built_models["digits_mlp"]
    context = make_context(built.directory, request.param)
    handler = InferenceHandler()
    handler.initialize(context)
    return handler, context, built
