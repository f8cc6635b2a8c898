"""The architecture zoo report: every zoo checkpoint (servekit.examples.zoo) saved with save_pretrained, exported
with ``--transformers`` in one call, then each format (TorchScript, ONNX, .pt2) and its dynamic INT8 variant
built and validated on its own -> reports/zoo.{md,json}: pass, or the reason it does not.

Dynamic INT8 per format: TorchScript from torch.ao's quantize_dynamic (Linear layers INT8, validated against its
eager INT8 twin), ONNX from ONNX Runtime's quantize_dynamic (no eager twin: compared with FP32 at the variants'
INT8 tolerance), .pt2 from PT2E with torchao's x86 Inductor quantizer in dynamic mode (validated against its
Q/DQ twin). Only `make zoo-report` writes the report.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from servekit.build import validate
from servekit.build.checkpoint.derive import CheckpointOptions
from servekit.build.checkpoint.export import TransformersOptions, checkpoint_build, quiet_transformers
from servekit.build.export import (AOTI_FILE, ONNX_FILE, TORCHSCRIPT_FILE, ExportSpec, capture, compile_aoti,
                                   export_onnx, export_torchscript)
from servekit.build.model_config import Batching
from servekit.build.model_dir import VALIDATION_FILE
from servekit.build.options import export_build
from servekit.build.optimize import quantize
from servekit.build.variants import INT8_TOLERANCE, PT2E_TWIN_TOLERANCE
from servekit.examples.zoo import ARCHITECTURES, EXTRA, Architecture, save_checkpoint
from servekit.measure.reports import write_report

FORMATS = ("torchscript", "onnx", "aoti")
COLUMNS = {"torchscript": "TorchScript", "onnx": "ONNX", "aoti": ".pt2", "ts_int8": "TorchScript INT8",
           "onnx_int8": "ONNX INT8", "pt2_int8": ".pt2 INT8"}
REASON_CHARS = 160


@dataclass
class ZooRow:
    """One architecture: did the one-command export pass, and each format and INT8 variant (pass or why not)."""

    name: str
    architecture: str
    modality: str
    listed: bool  # one of the 20 of the target, or an extra
    refused: str = ""  # the zoo's expected refusal, if any
    task: str = ""
    one_command: str = ""  # "pass" or the reason
    cells: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def as_expected(self) -> bool:
        """Exported in one command, or refused for the reason the zoo expects."""
        return self.one_command == "pass" or bool(self.refused and self.refused in self.one_command)


def short(error: BaseException) -> str:
    """An error as one short line for a table cell."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.replace("|", "/")
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


def check(cells: dict[str, str], key: str, work: Callable[[], object]) -> None:
    """Run one build-and-validate step; its cell says pass or why not."""
    try:
        work()
        cells[key] = "pass"
    except Exception as error:  # noqa: BLE001 - every reason goes into the report, none stops the others
        cells[key] = f"fails: {short(error)}"


def zoo_row(arch: Architecture, work: Path, listed: bool) -> ZooRow:
    """Save, export in one command, then every format and INT8 variant on its own."""
    started = time.perf_counter()
    row = ZooRow(arch.name, arch.model_class, arch.modality, listed, arch.refused)
    folder = save_checkpoint(arch, work / "checkpoints" / arch.name)
    options = TransformersOptions(folder, arch.name, CheckpointOptions(pooling=arch.pooling, **arch.options),
                                  batching=Batching(), build_dir=work / "build")
    with quiet_transformers():
        try:
            derived, build, heldout = checkpoint_build(options, say=lambda _: None)
            row.task = derived.task
        except Exception as error:  # noqa: BLE001 - a refusal is a row of the report
            row.one_command = f"fails: {short(error)}"
            row.cells = {key: "-" for key in COLUMNS}
            row.seconds = time.perf_counter() - started
            return row
        spec = ExportSpec.of(build.signature, examples=build.examples)
        try:
            written = export_build(derived.wrapper, build, heldout, options.build_dir)
            row.one_command = "pass"
            unsupported = json.loads((written / VALIDATION_FILE).read_text()).get("unsupported", {})
            row.cells.update({fmt: f"fails: {short(RuntimeError(unsupported[fmt]))}" if fmt in unsupported else "pass"
                              for fmt in FORMATS})
        except Exception as error:  # noqa: BLE001 - then each format on its own says which one failed and why
            row.one_command = f"fails: {short(error)}"
            _fp32_formats(row, derived.wrapper, spec, heldout, work / "formats" / arch.name)
        _int8_formats(row, derived.wrapper, spec, heldout, work / "formats" / arch.name)
    row.seconds = time.perf_counter() - started
    return row


def _validator(model, spec: ExportSpec, heldout: dict) -> Callable[..., None]:
    def validated(artifact: str, runner, reference=model, tolerance=(validate.DEFAULT_RTOL, validate.DEFAULT_ATOL)):
        validate.validate_artifact(reference, artifact, runner, heldout, rtol=tolerance[0], atol=tolerance[1],
                                   signature=spec.signature)
    return validated


def _fp32_formats(row: ZooRow, model, spec: ExportSpec, heldout: dict, out: Path) -> None:
    """Each FP32 format built and validated on its own."""
    out.mkdir(parents=True, exist_ok=True)
    validated = _validator(model, spec, heldout)
    check(row.cells, "torchscript", lambda: validated(
        "torchscript", validate.torchscript_runner(export_torchscript(model, spec, out / TORCHSCRIPT_FILE))))
    check(row.cells, "onnx", lambda: (validate.check_onnx_model(export_onnx(model, spec, out / ONNX_FILE)), validated(
        "onnx", validate.onnx_runner(out / ONNX_FILE, spec.signature.names))))
    check(row.cells, "aoti", lambda: validated(
        "aoti", validate.aoti_runner(compile_aoti(capture(model, spec), out / AOTI_FILE))))


def _int8_formats(row: ZooRow, model, spec: ExportSpec, heldout: dict, out: Path) -> None:
    """Each format's dynamic INT8 variant built and validated."""
    out.mkdir(parents=True, exist_ok=True)
    validated = _validator(model, spec, heldout)

    def ts_int8() -> None:
        twin = quantize.torch_dynamic_int8(copy.deepcopy(model))
        validated("ts_int8", validate.torchscript_runner(export_torchscript(twin, spec, out / "int8.pt")), twin)

    def onnx_int8() -> None:
        source = out / ONNX_FILE
        if not source.exists():
            export_onnx(model, spec, source)
        path = quantize.onnx_dynamic_int8(source, out / "int8.onnx")
        validated("onnx_int8", validate.onnx_runner(path, spec.signature.names), model, INT8_TOLERANCE)

    def pt2_int8() -> None:
        twin = pt2e_dynamic_int8(model, spec)
        validated("pt2_int8", validate.aoti_runner(compile_aoti(capture(twin, spec), out / "int8.pt2")), twin,
                  PT2E_TWIN_TOLERANCE)

    check(row.cells, "ts_int8", ts_int8)
    check(row.cells, "onnx_int8", onnx_int8)
    check(row.cells, "pt2_int8", pt2_int8)


def pt2e_dynamic_int8(model, spec: ExportSpec):
    """PT2E with torchao's x86 Inductor quantizer in dynamic mode (INT8 weights, activations quantized per batch);
    returns the Q/DQ eager twin that ``compile_aoti`` turns into a .pt2."""
    import torch

    with quantize._quiet_torchao_import():
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config(is_dynamic=True))
    prepared = prepare_pt2e(capture(model, spec).module(), quantizer)
    example = spec.example()
    with torch.no_grad():
        prepared(*example) if isinstance(example, tuple) else prepared(example)
    return allow_exported_model_train_eval(convert_pt2e(prepared))


def render(rows: list[ZooRow], load: str, seconds: float) -> str:
    """reports/zoo.md."""
    listed = [r for r in rows if r.listed]
    passed = [r for r in listed if r.one_command == "pass"]
    lines = ["# Architecture zoo: `servekit export --transformers DIR`", "",
             "Made by `make zoo-report` (servekit/measure/zoo_report.py). Each architecture is a tiny random config "
             "saved with `save_pretrained` (config.json, model.safetensors, tokenizer.json built with `tokenizers`, "
             "preprocessor_config.json), exported in one command with every format, then each format and its "
             "dynamic INT8 variant built and validated on its own (batch sizes 1, 7, 64; shortest, middle and "
             "longest length).", "",
             f"**{len(passed)} of the {len(listed)} listed architectures export and validate in one command "
             f"({100 * len(passed) / max(1, len(listed)):.0f} %).** Run on {platform.machine()}, {os.cpu_count()} cores, "
             f"load average {load} at the start; {seconds / 60:.1f} minutes.", "",
             "| architecture | model class | task | one command | " + " | ".join(COLUMNS.values()) + " | seconds |",
             "|---|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for row in rows:
        name = row.name if row.listed else f"{row.name} (extra)"
        cells = [row.cells.get(key, "") for key in COLUMNS]
        lines.append(f"| {name} | {row.architecture} | {row.task or '-'} | {row.one_command} | " + " | ".join(cells)
                     + f" | {row.seconds:.0f} |")
    lines += ["", "INT8 tolerances: TorchScript INT8 and .pt2 INT8 against their own eager INT8 twins "
              f"(rtol/atol {validate.DEFAULT_RTOL:g}/{validate.DEFAULT_ATOL:g} and {PT2E_TWIN_TOLERANCE[0]:g}/"
              f"{PT2E_TWIN_TOLERANCE[1]:g}); ONNX INT8 has no twin and is compared with FP32 at "
              f"{INT8_TOLERANCE[0]:g}/{INT8_TOLERANCE[1]:g}. Tiny random models say whether a format captures and "
              "reproduces an architecture, not how accurate INT8 is on real weights.", ""]
    return "\n".join(lines)


def run_zoo_report(work_dir: Path, reports_dir: Path, names: tuple[str, ...] = (), resume: bool = False
                   ) -> list[ZooRow]:
    """Every zoo architecture (or ``names``) -> reports/zoo.{md,json}, rewritten after each row so a stopped run
    keeps what it measured (``resume``: keep the rows reports/zoo.json already holds and measure the rest)."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    started = time.perf_counter()
    done = _previous_rows(reports_dir) if resume else {}
    if work_dir.exists():
        shutil.rmtree(work_dir)
    wanted = [arch for arch in ARCHITECTURES + EXTRA if not names or arch.name in names]
    rows: list[ZooRow] = []
    for arch in wanted:
        if arch.name in done:
            rows.append(done[arch.name])
            continue
        print(f"zoo: {arch.name} ({arch.model_class})", flush=True)
        row = zoo_row(arch, work_dir, arch in ARCHITECTURES)
        print(f"  one command: {row.one_command}; " + ", ".join(f"{COLUMNS[k]} {v.split(':')[0]}"
                                                                  for k, v in row.cells.items()), flush=True)
        rows.append(row)
        _write(reports_dir, rows, len(wanted), load, time.perf_counter() - started)
    return rows


def _write(reports_dir: Path, rows: list[ZooRow], wanted: int, load: str, seconds: float) -> None:
    document = {"load_average": load, "seconds": round(seconds, 1), "complete": len(rows) == wanted,
                "rows": [{"name": r.name, "architecture": r.architecture, "modality": r.modality, "listed": r.listed,
                          "refused": r.refused, "task": r.task, "one_command": r.one_command, **r.cells,
                          "seconds": round(r.seconds, 1)} for r in rows]}
    text = render(rows, load, seconds)
    if len(rows) < wanted:
        text = text.replace("\n\n", f"\n\n**Partial: {len(rows)} of {wanted} architectures measured so far.**\n\n", 1)
    write_report(reports_dir, "zoo", document, text)


def _previous_rows(reports_dir: Path) -> dict[str, ZooRow]:
    path = reports_dir / "zoo.json"
    if not path.exists():
        return {}
    rows = {}
    for raw in json.loads(path.read_text()).get("rows", []):
        row = ZooRow(raw["name"], raw["architecture"], raw["modality"], raw["listed"], raw.get("refused", ""),
                     raw.get("task", ""), raw["one_command"], {k: raw[k] for k in COLUMNS if k in raw}, raw["seconds"])
        rows[row.name] = row
    return rows
