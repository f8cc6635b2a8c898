"""Bad input and faults against a live TorchServe; results for reports/reliability.md."""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import requests

from servekit.measure.bad_inputs import BadInput, good_body
from servekit.serve.client import NPY_CONTENT_TYPE, TorchServeClient, error_message, predict_with_retries

T = TypeVar("T")

PROBABILITY_TOLERANCE = 1e-5  # batch composition changes BLAS kernels, so the last digits may move


def same_answer(response: requests.Response, reference: requests.Response) -> bool:
    """200 with the reference's answer: classes and probabilities (to rounding); for entities, answer spans and
    any other task, the same JSON with numbers to rounding."""
    if response.status_code != 200:
        return False
    got, want = response.json()["predictions"], reference.json()["predictions"]
    if not all(isinstance(w, dict) and "class" in w for w in want):
        return _same_json(got, want)
    return len(got) == len(want) and all(
        g["class"] == w["class"] and all(abs(a["probability"] - b["probability"]) <= PROBABILITY_TOLERANCE
                                         for a, b in zip(g["top_k"], w["top_k"]))
        for g, w in zip(got, want))


def _same_json(got: object, want: object) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same_json(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same_json(g, w) for g, w in zip(got, want))
    if isinstance(want, float) and isinstance(got, (int, float)):
        return abs(got - want) <= PROBABILITY_TOLERANCE
    return got == want


@dataclass
class CaseOutcome:
    """What one bad request got, and whether its good batch-mates were unharmed."""

    archive: str
    case: str
    expected_status: int
    status: int
    message: str
    passed: bool


def call_together(calls: list[Callable[[], T]]) -> list[T]:
    """Run every call at once (a barrier releases them together), so the frontend batches their requests."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(go, calls))


def send_together(client: TorchServeClient, model: str, bodies: list[tuple]) -> list[requests.Response]:
    """Release every request at once so the frontend batches them together; each request is
    (body, content type) or (body, content type, headers)."""
    return call_together([lambda body=body: client.predict_raw(model, body[0], body[1],
                                                               headers=body[2] if len(body) > 2 else None)
                          for body in bodies])


def run_matrix(client: TorchServeClient, archive: str, shape: tuple[int, ...], cases: list[BadInput],
               batch_size: int, good_request: tuple[bytes, str] | None = None) -> tuple[list[CaseOutcome], int]:
    """Send the cases in groups mixed half and half with good requests; return outcomes and good failures.

    Every group is sent at once so bad and good requests share batches; a good request that
    does not get 200 and the baseline answer counts as a failure. ``good_request``: a body and its
    content type (default: an .npy instance of ``shape``; an image model needs an image).
    """
    good, good_type = good_request or (good_body(shape), NPY_CONTENT_TYPE)
    baseline = client.predict_raw(archive, good, good_type)
    baseline.raise_for_status()
    outcomes, good_failures = [], 0
    group = max(1, batch_size // 2)
    for start in range(0, len(cases), group):
        chunk = cases[start:start + group]
        bodies = [(c.body, c.content_type, c.headers) for c in chunk] + [(good, good_type)] * len(chunk)
        responses = send_together(client, archive, bodies)
        for case, response in zip(chunk, responses):
            message = error_message(response)
            passed = response.status_code == case.status and case.message in message
            outcomes.append(CaseOutcome(archive, case.name, case.status, response.status_code, message, passed))
        good_failures += sum(not same_answer(r, baseline) for r in responses[len(chunk):])
    return outcomes, good_failures


@dataclass
class FaultRun:
    """A load run during which a fault was injected."""

    fault: str
    requests: int = 0
    retried_failures: int = 0  # failures the client saw and retried
    wrong_answers: int = 0
    lost: int = 0  # requests that never got a correct answer
    recovery_s: float | None = None
    details: list[str] = field(default_factory=list)


def worker_pids(client: TorchServeClient, model: str) -> list[int]:
    """PIDs of the model's worker processes, from the management API."""
    return [int(w["pid"]) for w in client.describe(model)[0]["workers"] if w.get("pid")]


def kill_worker_under_load(client: TorchServeClient, model: str, shape: tuple[int, ...], requests_total: int = 400,
                           concurrency: int = 8, kill_after: int = 100) -> FaultRun:
    """SIGKILL the worker mid-load; a retrying client must still get every answer right."""
    body = good_body(shape)
    expected = client.predict_raw(model, body, NPY_CONTENT_TYPE)
    run = FaultRun("SIGKILL worker during load")
    sent = threading.Semaphore(0)
    killed_at: list[float] = []

    def killer() -> None:
        for _ in range(kill_after):
            sent.acquire()
        [pid] = worker_pids(client, model)[:1]
        os.kill(pid, signal.SIGKILL)
        killed_at.append(time.monotonic())
        run.details.append(f"killed worker pid {pid}")

    def one(_: int) -> tuple[bool, int]:
        sent.release()
        try:
            response, failures = predict_with_retries(client, model, body, NPY_CONTENT_TYPE)
        except Exception:  # noqa: BLE001 - counted as lost, never hidden
            return False, 0
        return same_answer(response, expected), failures

    thread = threading.Thread(target=killer)
    thread.start()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests_total)))
    thread.join()
    run.requests = requests_total
    run.retried_failures = sum(failures for _, failures in results)
    run.lost = sum(not ok for ok, _ in results)
    run.recovery_s = _time_until_ready(client, model, killed_at[0]) if killed_at else None
    new_pids = worker_pids(client, model)
    run.details.append(f"worker pids after: {new_pids}")
    return run


def _time_until_ready(client: TorchServeClient, model: str, since: float, timeout_s: float = 60.0) -> float:
    while time.monotonic() - since < timeout_s:
        workers = client.describe(model)[0]["workers"]
        if workers and all(w["status"] == "READY" for w in workers):
            return time.monotonic() - since
        time.sleep(0.1)
    raise TimeoutError(f"{model}: workers not READY {timeout_s}s after the fault")


def scale_under_load(client: TorchServeClient, model: str, shape: tuple[int, ...], requests_total: int = 300,
                     concurrency: int = 8) -> FaultRun:
    """Scale workers 1 -> 2 -> 1 while requests flow; none may fail."""
    def scale() -> None:
        client.scale(model, 2)
        client.scale(model, 1)

    return _change_under_load(client, model, shape, "scale workers 1 -> 2 -> 1 during load", scale,
                              requests_total, concurrency)


def churn_under_load(client: TorchServeClient, model: str, other_archive: str, shape: tuple[int, ...],
                     requests_total: int = 300, concurrency: int = 8) -> FaultRun:
    """Register and unregister another model twice while requests to ``model`` flow; none may fail."""
    def churn() -> None:
        for _ in range(2):
            client.register(other_archive, model_name="churn", batch_size=4, max_batch_delay_ms=1)
            client.unregister("churn")

    return _change_under_load(client, model, shape, "register/unregister another model during load", churn,
                              requests_total, concurrency)


def _change_under_load(client: TorchServeClient, model: str, shape: tuple[int, ...], fault: str,
                       change: Callable[[], None], requests_total: int, concurrency: int) -> FaultRun:
    """Run ``change`` (management calls) while ``requests_total`` inferences flow; count wrong answers."""
    body = good_body(shape)
    expected = client.predict_raw(model, body, NPY_CONTENT_TYPE)
    run = FaultRun(fault)
    with ThreadPoolExecutor(max_workers=concurrency + 1) as pool:
        changing = pool.submit(change)
        responses = list(pool.map(lambda _: client.predict_raw(model, body, NPY_CONTENT_TYPE), range(requests_total)))
        changing.result()  # a failed management call fails the run, never silently
    run.requests = requests_total
    run.wrong_answers = sum(not same_answer(r, expected) for r in responses)
    run.lost = run.wrong_answers
    return run
