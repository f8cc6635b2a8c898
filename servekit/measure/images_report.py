"""`servekit images`: an image classifier end to end. scikit-learn's digits become real PNG files, a
ResNet-18 is trained on them (briefly), exported through `servekit export --image-*` with its declared
preprocessing, and its variants are gated and archived through `servekit variants`; the decode is
measured against the naive way. Everything lands in reports/images.{md,json}."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from handlers.image import ImagePreprocess
from servekit.build.images import encode, preprocess
from servekit.build.optimize.prune import DEFAULT_AMOUNT as DEFAULT_PRUNE_AMOUNT
from servekit.build.options import ExportOptions, VariantOptions, export_user_model, user_variant_inputs
from servekit.build.variants import Gates
from servekit.examples.data import LABELS, load_digits_split
from servekit.examples.vision import DIGITS_SIDE, digits_resnet18
from servekit.measure.reports import write_report
from servekit.measure.variants_report import run_variants

NAME = "digits_resnet18"
NORMALISATION = ("0.5", "0.5")  # digits are ink on white-ish grey: centre them on 0
TRAIN_SEED = 0
BATCH = 32  # more steps per pass: the model sees 1,347 images only a few times


def digits_as_png(x: np.ndarray) -> list[bytes]:
    """8x8 scans (0..1) -> 8x8 grey PNG files, as a client would upload them."""
    return [encode((row.reshape(8, 8) * 255).round().astype(np.uint8), "PNG") for row in x]


def image_preprocess() -> ImagePreprocess:
    """What the export options below declare (grey PNGs become RGB, upscaled to 32x32)."""
    return ImagePreprocess(crop=DIGITS_SIDE, resize=DIGITS_SIDE, mean=(0.5,), std=(0.5,))


def train(x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[torch.nn.Module, float]:
    """Adam, batch 32, ``epochs`` passes over the preprocessed training images."""
    torch.manual_seed(TRAIN_SEED)
    model = digits_resnet18().train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            loss = torch.nn.functional.cross_entropy(model(inputs[idx]), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    return model.eval(), time.perf_counter() - started


def run_images(build_dir: Path, model_store: Path, reports_dir: Path, epochs: int = 3, variants: bool = True) -> dict:
    """Train, export, gate variants, measure decode; write reports/images.{md,json}."""
    from servekit.measure.image_decode import measure_decode

    data_dir = build_dir / "digits_images"
    heldout_dir = data_dir / "heldout"
    heldout_dir.mkdir(parents=True, exist_ok=True)
    split = load_digits_split()
    prep = image_preprocess()
    train_png, test_png = digits_as_png(split.x_train), digits_as_png(split.x_test)
    for idx, data in enumerate(test_png):
        (heldout_dir / f"{idx:04d}_{split.y_test[idx]}.png").write_bytes(data)
    x_train, x_test = preprocess(train_png, prep), preprocess(test_png, prep)
    for name, array in (("x_train", x_train), ("y_train", split.y_train), ("x_test", x_test), ("y_test", split.y_test)):
        np.save(data_dir / f"{name}.npy", array)
    print(f"==> training ResNet-18 on {len(x_train)} digit images ({DIGITS_SIDE}x{DIGITS_SIDE}), {epochs} epochs")
    model, seconds = train(x_train, split.y_train, epochs)
    with torch.inference_mode():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == split.y_test).mean())
    weights = data_dir / f"{NAME}.pt"
    torch.save(model.state_dict(), weights)
    print(f"  held-out accuracy {accuracy:.2%} ({seconds:.0f} s)")
    factory = "servekit.examples.vision:digits_resnet18"
    export_user_model(ExportOptions(
        factory=factory, weights=weights, name=NAME, build_dir=build_dir, task="classification",
        labels=",".join(LABELS), inputs=(f"image:float32:3,{DIGITS_SIDE},{DIGITS_SIDE}",), image_resize=DIGITS_SIDE,
        image_mean=NORMALISATION[0], image_std=NORMALISATION[1], heldout=heldout_dir, atol=1e-4))
    doc: dict = {"model": {"name": NAME, "train_images": len(x_train), "heldout_images": len(x_test), "epochs": epochs,
                           "train_seconds": round(seconds, 1), "heldout_accuracy": accuracy}}
    if variants:
        variant_reports = build_dir / "images_variants_report"
        job = user_variant_inputs(VariantOptions(
            factory=factory, weights=weights, name=NAME, build_dir=build_dir, heldout=data_dir / "x_test.npy",
            heldout_labels=data_dir / "y_test.npy", calibration=data_dir / "x_train.npy"))
        run_variants([job], model_store, variant_reports, Gates(), DEFAULT_PRUNE_AMOUNT, finetune_epochs=0)
        doc["variants"] = json.loads((variant_reports / "variants.json").read_text())["variants"]
    print("==> measuring decode (ours vs naive, 640x427 and 12 MP JPEG; serial vs 2 threads)")
    doc["decode"] = measure_decode()
    if write_report(reports_dir, "images", doc, render(doc)) is not None:
        print(f"wrote {reports_dir}/images.md")
    return doc


def render(doc: dict) -> str:
    """reports/images.md."""
    model, decode = doc["model"], doc["decode"]
    lines = ["# Images", "", "Generated by `servekit images` on this machine (numbers move with its load).", "",
             "## The model", "",
             f"ResNet-18 (our own code, torchvision's layout) trained for {model['epochs']} epochs "
             f"({model['train_seconds']} s) on {model['train_images']} of scikit-learn's digits written as 8x8 grey PNG "
             f"files and preprocessed by the handler's own code (grey to RGB, upscaled to {DIGITS_SIDE}x{DIGITS_SIDE}, "
             f"mean/std 0.5). Held-out accuracy in-process: **{model['heldout_accuracy']:.2%}** on "
             f"{model['heldout_images']} PNG files.", ""]
    if "variants" in doc:
        lines += ["## Variants (gated on the held-out digit images)", "",
                  "| variant | format | accuracy | agreement with FP32 | gate | size MB | p50 batch 32 ms | speed-up b32 |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in doc["variants"]:
            lines.append(f"| {row['variant']} | {row['format']} | {_pct(row.get('accuracy'))} | {_pct(row.get('agreement'))} | "
                         f"{'pass' if row['passed'] else 'REJECTED: ' + str(row.get('reason', ''))[:70]} | "
                         f"{_num((row.get('file_bytes') or 0) / 1e6)} | {_num(row.get('p50_ms_b32'))} | "
                         f"{_num(row.get('speedup_b32'))} |")
        lines.append("")
    camera, big, batch = decode["photo_640x427"], decode["photo_12mp"], decode["batch16_640x427"]
    lines += ["## Decode and preprocess (to 3x224x224, resize 256, ImageNet mean/std)", "",
              "| image | ours ms | naive ms | ours / naive |", "|---|---|---|---|",
              f"| 640x427 JPEG (scikit-learn's photo) | {camera['ours_ms']:.1f} | {camera['naive_ms']:.1f} | {camera['ratio']:.2f} |",
              f"| 4000x3000 JPEG (12 MP, {big['bytes'] / 1e6:.1f} MB) | {big['ours_ms']:.1f} | {big['naive_ms']:.1f} | "
              f"**{big['ratio']:.2f}** |", "",
              "Naive: Pillow full decode, convert, resize the whole image, crop, normalise per image. Ours: JPEG draft "
              "mode (the decoder scales by 1/2, 1/4 or 1/8 while both sides stay at least the target), one resize of "
              "the crop's box, normalisation once per batch into a reused buffer.", "",
              f"A batch of 16 photos: serial {batch['serial_ms']:.0f} ms, on 2 threads {batch['pool2_ms']:.0f} ms "
              f"({batch['serial_ms'] / batch['pool2_ms']:.2f}x), naive {batch['naive_ms']:.0f} ms.", ""]
    return "\n".join(lines)


def _pct(value: object) -> str:
    return "–" if value is None else f"{float(value):.2%}"


def _num(value: object) -> str:
    return "–" if value is None else f"{float(value):.2f}"
