"""`servekit reliability`: the bad-input matrix, faults and access checks against a live TorchServe."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import requests

from servekit.build.archiving import run_archive_sh
from handlers.signature import InputSpec, Signature
from servekit.measure.bad_inputs import bad_images, bad_inputs, bad_texts
from servekit.serve.client import TorchServeError, UnsafeRegistration
from servekit.examples.demo import demo_build_inputs
from servekit.build.model_config import Batching
from servekit.examples.models import DEMO_MODELS
from servekit.measure.reliability import churn_under_load, kill_worker_under_load, run_matrix, scale_under_load
from servekit.serve.torchserve import TorchServe, restart_from_snapshot
from servekit.measure.reports import write_report

MAX_REQUEST_SIZE = 6291456
BATCH_SIZE = 16


def run_reliability(build_dir: Path, reports_dir: Path | None) -> dict:
    """Everything against one server; writes reports/reliability.{md,json}."""
    from servekit.build.model_dir import build_model_dir

    store = build_dir / "reliability_store"
    store.mkdir(parents=True, exist_ok=True)
    shapes = {}
    for name, spec in DEMO_MODELS.items():
        model, build, heldout = demo_build_inputs(name, build_dir, Batching())
        build_model_dir(model, build, heldout, build_dir / name)
        run_archive_sh([build_dir / name], store, quiet=True)
        shapes[name] = spec.input_shape
    from servekit.examples.vision import TINY_MAX_PIXELS, TINY_NAME, export_tiny_vision

    run_archive_sh([export_tiny_vision(build_dir)], store, quiet=True)
    text_archive = _export_text_model(build_dir, store)
    server = TorchServe(store, build_dir / "reliability_server")
    client = server.start()
    doc: dict = {"matrix": [], "faults": [], "access": []}
    try:
        for name, shape in shapes.items():
            for fmt in ("ts", "onnx"):
                archive_name = f"{name}_{fmt}"
                client.register(f"{archive_name}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=10)
                cases = bad_inputs(shape, 64, MAX_REQUEST_SIZE, DEMO_MODELS[name].input_name)
                outcomes, good_failures = run_matrix(client, archive_name, shape, cases, BATCH_SIZE)
                doc["matrix"].append({"archive": archive_name, "cases": [asdict(o) for o in outcomes],
                                      "good_requests": len(cases), "good_failures": good_failures,
                                      "healthy_after": client.ping()})
                print(f"  {archive_name}: {sum(o.passed for o in outcomes)}/{len(outcomes)} bad inputs answered as "
                      f"expected; {good_failures} good batch-mates harmed")
        _image_matrix(client, doc, TINY_NAME, TINY_MAX_PIXELS)
        _checkpoint_matrix(client, doc, build_dir, store)
        _text_matrix(client, doc, text_archive)
        mlp_shape = shapes["digits_mlp"]
        for fault in (kill_worker_under_load(client, "digits_mlp_onnx", mlp_shape),
                      scale_under_load(client, "digits_mlp_ts", mlp_shape),
                      churn_under_load(client, "digits_mlp_ts", "digits_cnn_ts.mar", mlp_shape)):
            doc["faults"].append(asdict(fault))
            print(f"  {fault.fault}: {fault.requests} requests, {fault.retried_failures} failures retried, "
                  f"{fault.lost} lost")
        doc["access"] = access_checks(client)
        started = time.monotonic()
        server = restart_from_snapshot(server)
        client = server.client
        _wait_for(client, [f"{n}_{f}" for n in shapes for f in ("ts", "onnx")])
        restored = {m: client.describe(m)[0]["batchSize"] for m in client.list_models()}
        doc["faults"].append({"fault": "restart TorchServe from its snapshot", "restored": restored,
                              "seconds": round(time.monotonic() - started, 1), "lost": 0})
    finally:
        server.stop()
    if write_report(reports_dir, "reliability", doc, render(doc)) is not None:
        print(f"wrote {reports_dir}/reliability.md")
    return doc


def _image_matrix(client, doc: dict, name: str, max_pixels: int) -> None:
    """Bad images (corrupt, truncated, GIF/BMP/TIFF, bombs, bad base64, v2) mixed with real photos."""
    from servekit.build.images import encode, sample_photos

    photo = encode(sample_photos()[0])
    for fmt in ("ts", "onnx"):
        archive_name = f"{name}_{fmt}"
        client.register(f"{archive_name}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=10)
        cases = bad_images(max_pixels, "image")
        outcomes, good_failures = run_matrix(client, archive_name, (), cases, BATCH_SIZE, (photo, "image/jpeg"))
        doc["matrix"].append({"archive": archive_name, "cases": [asdict(o) for o in outcomes],
                              "good_requests": len(cases), "good_failures": good_failures,
                              "healthy_after": client.ping()})
        print(f"  {archive_name}: {sum(o.passed for o in outcomes)}/{len(outcomes)} bad images answered as "
              f"expected; {good_failures} good batch-mates harmed")


def _checkpoint_matrix(client, doc: dict, build_dir: Path, store: Path) -> None:
    """Bad audio, questions and texts against transformers checkpoints exported with --transformers (the zoo's)."""
    import json

    from servekit.examples.zoo import export_checkpoint, tone, wav_bytes
    from servekit.measure.bad_inputs import bad_audio, bad_questions, bad_texts

    kinds = {"wav2vec2": (lambda: bad_audio("input_values", 1.0, 64), (wav_bytes(tone(0.3)), "audio/wav")),
             "bert-qa": (lambda: bad_questions(64),
                         (json.dumps({"question": "who ?", "context": "john works"}).encode(), "application/json")),
             "bert-ner": (lambda: bad_texts(64, ("input_ids", "attention_mask", "token_type_ids")),
                          (json.dumps({"text": "john works in paris"}).encode(), "application/json"))}
    for name, (cases, good) in kinds.items():
        exported = export_checkpoint(name, build_dir / "zoo_reliability")
        run_archive_sh([exported.directory], store, quiet=True)
        archive_name = f"{name}_onnx"
        client.register(f"{archive_name}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=10)
        bad = cases()
        outcomes, good_failures = run_matrix(client, archive_name, (), bad, BATCH_SIZE, good)
        doc["matrix"].append({"archive": archive_name, "cases": [asdict(o) for o in outcomes],
                              "good_requests": len(bad), "good_failures": good_failures,
                              "healthy_after": client.ping()})
        print(f"  {archive_name}: {sum(o.passed for o in outcomes)}/{len(outcomes)} bad bodies answered as expected; "
              f"{good_failures} good batch-mates harmed")
def _export_text_model(build_dir: Path, store: Path) -> str:
    """The test-sized BERT with its tokenizer (trained for seconds), archived; returns its archive name."""
    from servekit.build.model_dir import ModelBuild, build_model_dir
    from servekit.examples.text_model import LABELS, MAX_LENGTH, TINY, VOCAB_SIZE, prepare_text_task

    task = prepare_text_task(build_dir / "reliability_text", TINY, train_count=400, epochs=2)
    ids = InputSpec("input_ids", (f"1..{MAX_LENGTH}",), "int64", 0, VOCAB_SIZE - 1)
    mask = InputSpec("attention_mask", (f"1..{MAX_LENGTH}",), "int64", 0, 1)
    build = ModelBuild("reliability_bert", Signature((ids, mask)), LABELS, Batching(), formats=("onnx",),
                       tokenizer=task.tokenizer_path)
    run_archive_sh([build_model_dir(task.model, build, dict(task.test_inputs), build_dir / "reliability_bert",
                                    atol=1e-4)], store, quiet=True)
    return "reliability_bert_onnx"


def _text_matrix(client, doc: dict, archive_name: str) -> None:
    """Bad texts (empty, a lone surrogate, not UTF-8) and 5 MB of text mixed with a good sentence."""
    import json

    client.register(f"{archive_name}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=10)
    cases = bad_texts()
    outcomes, good_failures = run_matrix(client, archive_name, (), cases, BATCH_SIZE,
                                         (json.dumps({"text": "the match and the goal"}).encode(), "application/json"))
    doc["matrix"].append({"archive": archive_name, "cases": [asdict(o) for o in outcomes],
                          "good_requests": len(cases), "good_failures": good_failures, "healthy_after": client.ping()})
    print(f"  {archive_name}: {sum(o.passed for o in outcomes)}/{len(outcomes)} bad texts answered as expected; "
          f"{good_failures} good batch-mates harmed")


def access_checks(client) -> list[dict]:
    """Requests that must be refused: no token, wrong token, archives from outside the store."""
    checks = []
    url = f"{client.inference_url}/predictions/digits_mlp_ts"
    for label, headers in (("no token", {}), ("wrong token", {"Authorization": "Bearer wrong"})):
        for api, target in (("inference", url), ("management", f"{client.management_url}/models")):
            method = requests.post if api == "inference" else requests.get
            response = method(target, headers=headers, timeout=10, **({"json": {"data": [0.5] * 64}} if api == "inference" else {}))
            checks.append({"check": f"{label} on {api}", "status": response.status_code,
                           "refused": response.status_code in (400, 401, 403)})
    registrations = (("file:///etc/passwd.mar", None), ("https://example.invalid/model.mar", None),
                     ("jar:file:///elsewhere/x.mar!/", "jarred"), ("digits_mlp_ts.mar", "../../x"),
                     ("digits_mlp_ts.mar", "a b"))
    for url, name in registrations:
        label = f"register {url}" + (f" as {name!r}" if name else "")
        try:  # servekit's client refuses before sending anything
            client.register(url, model_name=name, batch_size=1, max_batch_delay_ms=1)
            checks.append({"check": f"{label} (servekit client)", "status": 200, "refused": False})
        except UnsafeRegistration:
            checks.append({"check": f"{label} (servekit client)", "status": "not sent", "refused": True})
        params = {"url": url, "batch_size": 1, "max_batch_delay": 1, "initial_workers": 1, "synchronous": "true",
                  **({"model_name": name} if name else {})}
        try:  # and TorchServe itself, or our handler refusing to load under that name
            client.post_model(params)
            status = 200
        except TorchServeError as err:
            status = err.status
        left = name is not None and name in client.list_models()
        checks.append({"check": f"{label} (curl)", "status": status, "refused": status != 200 and not left})
    return checks


def _wait_for(client, models: list[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        present = set(client.list_models())
        if set(models) <= present and all(
                w["status"] == "READY" for m in models for w in client.describe(m)[0]["workers"]):
            return
        time.sleep(0.5)
    raise TimeoutError(f"models {models} not READY after restart")


def render(doc: dict) -> str:
    """reports/reliability.md."""
    cases = [c for m in doc["matrix"] for c in m["cases"]]
    good = sum(m["good_requests"] for m in doc["matrix"])
    lines = ["# Reliability", "", "Generated by `servekit reliability` against a live TorchServe 0.12 (token auth on, loopback).", "",
             "## Bad input", "",
             f"{len({c['case'] for c in cases})} cases × {len(doc['matrix'])} archives = {len(cases)} bad requests, each sent at "
             f"once with a good request so they share batches ({good} good requests in all).", "",
             "| archive | bad answered as expected | good batch-mates harmed | healthy after |", "|---|---|---|---|"]
    for m in doc["matrix"]:
        lines.append(f"| {m['archive']} | {sum(c['passed'] for c in m['cases'])}/{len(m['cases'])} | {m['good_failures']} | "
                     f"{'yes' if m['healthy_after'] else 'NO'} |")
    lines += ["", "| case | status | message (first archive of its kind) |", "|---|---|---|"]
    seen = set()
    for c in cases:  # tensor cases from the first archive, image cases from the first image archive
        if c["case"] not in seen:
            seen.add(c["case"])
            lines.append(f"| {c['case']} | {c['status']} | {c['message'][:90].replace('|', '/')} |")
    lines += ["", "## Faults", "", "| fault | requests | failures seen and retried | lost |", "|---|---|---|---|"]
    for f in doc["faults"]:
        lines.append(f"| {f['fault']} | {f.get('requests', '–')} | {f.get('retried_failures', '–')} | {f['lost']} |")
    restart = doc["faults"][-1]
    lines += ["", f"After the restart from the snapshot ({restart['seconds']} s), the registered models and their batch "
              f"sizes came back: {restart['restored']}.", "", "## Access", "", "| check | status | refused |", "|---|---|---|"]
    lines += [f"| {a['check']} | {a['status']} | {'yes' if a['refused'] else 'NO'} |" for a in doc["access"]]
    lines += ["", "TorchServe 0.12 answers a missing or wrong token with 400 (InvalidKeyException), not 401.", ""]
    return "\n".join(lines)
