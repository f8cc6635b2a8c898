"""A small typed client for TorchServe's inference, management and metrics APIs (with tokens)."""
from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
import requests.adapters

from handlers.config import MODEL_NAME

NPY_CONTENT_TYPE = "application/x-npy"


PREDICTIONS = "predictions"  # models: POST /predictions/NAME
WFPREDICT = "wfpredict"  # workflows: POST /wfpredict/NAME
V2_INFER = "v2/models/{model}/infer"  # Open Inference Protocol (KServe v2)
SHUTDOWN_RACE = "ConcurrentModificationException"  # TorchServe 0.12, unregistering a model under load


ARCHIVE_NAME = re.compile(rf"{MODEL_NAME.pattern}\.(mar|war)")


class UnsafeRegistration(ValueError):
    """A registration naming its archive by URL or path, or a model name TorchServe could not route back."""


def check_registration(archive: str, model_name: str | None = None) -> None:
    """Archives are registered by their file name in the model store, models by a name DELETE can reach.

    TorchServe 0.12 registers ``url=jar:file:///elsewhere/x.mar!/`` (then loads its store folder itself) and
    ``model_name=../../x`` (which no DELETE /models/... can reach afterwards).
    """
    if not ARCHIVE_NAME.fullmatch(archive):
        raise UnsafeRegistration(f"archive {archive!r} must be the file name of a .mar or .war in the model store "
                                 "(NAME.mar): URLs (any scheme) and paths are refused")
    if model_name is not None and not MODEL_NAME.fullmatch(model_name):
        raise UnsafeRegistration(f"model name {model_name!r} must match {MODEL_NAME.pattern}")


class TorchServeError(RuntimeError):
    """A 4xx/5xx answer: keeps the status and TorchServe's or our handler's message."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Tokens:
    """The keys TorchServe writes into key_file.json when token authorization is on."""

    inference: str
    management: str

    @classmethod
    def from_key_file(cls, path: Path) -> Tokens:
        """Read ``key_file.json`` (written in TorchServe's working directory at start)."""
        keys = json.loads(Path(path).read_text())
        return cls(inference=keys["inference"]["key"], management=keys["management"]["key"])


@dataclass
class TorchServeClient:
    """Typed calls for the things users do with curl."""

    inference_url: str
    management_url: str
    metrics_url: str
    tokens: Tokens | None = None
    timeout_s: float = 60.0

    pool_size: int = 64

    def __post_init__(self) -> None:
        # One session shared by load threads: size its pool so connections are reused, not dropped.
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size)
        self.session.mount("http://", adapter)

    # --- inference API ---------------------------------------------------------------------
    def ping(self) -> bool:
        """True once the frontend answers /ping with Healthy."""
        try:
            response = self.session.get(f"{self.inference_url}/ping", headers=self._auth("inference"), timeout=2)
        except (requests.ConnectionError, requests.Timeout):
            return False
        return response.ok and response.json().get("status") == "Healthy"

    def predict_raw(self, model: str, body: bytes, content_type: str, endpoint: str = PREDICTIONS,
                    headers: dict[str, str] | None = None) -> requests.Response:
        """POST a body as is and return the response, whatever its status (``endpoint=WFPREDICT`` for workflows)."""
        return self._post_inference(f"{endpoint}/{model}", body, content_type, headers)

    def predict_json(self, model: str, data: Any, endpoint: str = PREDICTIONS) -> dict:
        """``{"data": data}`` as JSON; returns the decoded answer or raises TorchServeError."""
        body = json.dumps({"data": data}).encode()
        return self._checked(self.predict_raw(model, body, "application/json", endpoint)).json()

    def predict_npy(self, model: str, array: np.ndarray, endpoint: str = PREDICTIONS) -> dict:
        """One array as a raw .npy body."""
        return self._checked(self.predict_raw(model, npy_bytes(array), NPY_CONTENT_TYPE, endpoint)).json()

    def predict_v2(self, model: str, input_name: str, array: np.ndarray, request_id: str | None = None) -> dict:
        """An Open Inference Protocol (v2) request for ``array`` ([N, ...] float32); returns the v2 answer."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        request: dict[str, Any] = {"inputs": [{"name": input_name, "shape": list(array.shape), "datatype": "FP32",
                                               "data": array.ravel().tolist()}]}
        if request_id is not None:
            request["id"] = request_id
        # The Open Inference Protocol's own path, as KServe and Triton clients call it; TorchServe
        # routes it to the model's handler like /predictions/NAME.
        return self._checked(self._post_inference(V2_INFER.format(model=model), json.dumps(request).encode(),
                                                  "application/json")).json()

    # --- management API --------------------------------------------------------------------

    def register(self, archive: str, *, batch_size: int, max_batch_delay_ms: int, initial_workers: int = 1,
                 model_name: str | None = None, response_timeout_s: int | None = None) -> dict:
        """POST /models synchronously with batching parameters; an archive named by URL or path, or a model
        name outside [A-Za-z0-9_.-], is refused before anything is sent (``UnsafeRegistration``)."""
        check_registration(archive, model_name)
        params: dict[str, Any] = {"url": archive, "batch_size": batch_size, "max_batch_delay": max_batch_delay_ms,
                                  "initial_workers": initial_workers, "synchronous": "true"}
        if model_name:
            params["model_name"] = model_name
        if response_timeout_s:
            params["response_timeout"] = response_timeout_s
        return self.post_model(params)

    def post_model(self, params: dict[str, Any]) -> dict:
        """POST /models with exactly these parameters, unchecked (tests use it to see what TorchServe itself does)."""
        return self._management("post", "/models", params=params)

    def register_as_built(self, archive: str, model_name: str | None = None) -> dict:
        """POST /models with no batching or worker parameters: TorchServe takes batchSize, maxBatchDelay,
        minWorkers and maxWorkers from the archive's model-config.yaml (what `servekit tune` writes)."""
        params: dict[str, Any] = {"url": archive, "synchronous": "true"}
        if model_name:
            params["model_name"] = model_name
        return self._management("post", "/models", params=params)

    def register_workflow(self, archive: str, workflow_name: str | None = None) -> dict:
        """POST /workflows: registers the .war and every .mar its spec names (as <workflow>__<node>)."""
        check_registration(archive, workflow_name)
        params = {"url": archive, **({"workflow_name": workflow_name} if workflow_name else {})}
        return self._management("post", "/workflows", params=params)

    def unregister_workflow(self, workflow: str) -> dict:
        """DELETE /workflows/NAME (its member models go with it)."""
        return self._management("delete", f"/workflows/{workflow}")

    def describe(self, model: str) -> list[dict]:
        """GET /models/NAME: versions, workers, batch settings."""
        return self._management("get", f"/models/{model}")

    def list_models(self) -> list[str]:
        """Names of the registered models."""
        return [m["modelName"] for m in self._management("get", "/models")["models"]]

    def scale(self, model: str, min_worker: int, max_worker: int | None = None) -> dict:
        """PUT /models/NAME?min_worker=...&synchronous=true."""
        params = {"min_worker": min_worker, "max_worker": max_worker or min_worker, "synchronous": "true"}
        return self._management("put", f"/models/{model}", params=params)

    def unregister(self, model: str) -> dict:
        """DELETE /models/NAME.

        TorchServe 0.12 can answer 500 ConcurrentModificationException when a batch was still in
        flight: it has already removed the model, then fails while stopping its workers
        (``WorkerThread.shutdown``). A model that is gone after that answer counts as unregistered.
        """
        try:
            return self._management("delete", f"/models/{model}")
        except TorchServeError as error:
            if error.status != 500 or SHUTDOWN_RACE not in error.message or model in self.list_models():
                raise
            return {"status": f"Model \"{model}\" unregistered ({SHUTDOWN_RACE} while its workers stopped)"}

    # --- metrics API -----------------------------------------------------------------------
    def metrics(self) -> str:
        """The Prometheus text from the metrics endpoint."""
        return self._checked(self.session.get(f"{self.metrics_url}/metrics", timeout=self.timeout_s)).text

    # --- plumbing --------------------------------------------------------------------------
    def _post_inference(self, path: str, body: bytes, content_type: str,
                        headers: dict[str, str] | None = None) -> requests.Response:
        return self.session.post(f"{self.inference_url}/{path}", data=body,
                                 headers={"Content-Type": content_type, **(headers or {}), **self._auth("inference")},
                                 timeout=self.timeout_s)

    def _auth(self, api: str) -> dict[str, str]:
        if self.tokens is None:
            return {}
        return {"Authorization": f"Bearer {getattr(self.tokens, api)}"}

    def _management(self, method: str, path: str, params: dict | None = None) -> Any:
        response = self.session.request(method, f"{self.management_url}{path}", params=params,
                                        headers=self._auth("management"), timeout=self.timeout_s)
        return self._checked(response).json()

    @staticmethod
    def _checked(response: requests.Response) -> requests.Response:
        if response.status_code >= 400:
            raise TorchServeError(response.status_code, error_message(response), response.url)
        return response


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialize an array as an .npy body (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def error_message(response: requests.Response) -> str:
    """Our handler's ``error.message``, the Open Inference Protocol's ``error`` string, TorchServe's
    ``message``, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            return str(body["error"].get("message", body))
        if isinstance(body.get("error"), str):
            return body["error"]
        return str(body.get("message", body))
    return str(body)


RETRYABLE_STATUSES = (500, 502, 503, 504, 507)


def predict_with_retries(client: TorchServeClient, model: str, body: bytes, content_type: str,
                         attempts: int = 8, backoff_s: float = 0.25,
                         endpoint: str = PREDICTIONS) -> tuple[requests.Response, int]:
    """POST an inference (idempotent) and retry on connection errors and 5xx with growing backoff.

    Returns the final response and how many failures were retried. A 4xx is final: it is the
    request's fault, and sending it again cannot help.
    """
    failures = 0
    for attempt in range(attempts):
        try:
            response = client.predict_raw(model, body, content_type, endpoint)
            if response.status_code not in RETRYABLE_STATUSES:
                return response, failures
        except (requests.ConnectionError, requests.Timeout):
            response = None
        failures += 1
        if attempt + 1 < attempts:
            time.sleep(backoff_s * (2 ** attempt))
    if response is None:
        raise TorchServeError(0, f"no answer after {attempts} attempts", f"{client.inference_url}/{endpoint}/{model}")
    return response, failures
