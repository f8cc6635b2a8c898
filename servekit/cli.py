"""``servekit``: one console entry point; each step of the path is a subcommand."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

from handlers.config import DEFAULT_THRESHOLD, TASKS
from handlers.errors import ConfigError
from servekit.build.export import FORMATS as EXPORT_FORMATS
from servekit.build.export import OUTPUT_NAME
from servekit.build.images import add_image_arguments
from servekit.build.model_config import Batching
from servekit.build.optimize.prune import DEFAULT_AMOUNT as DEFAULT_PRUNE_AMOUNT
from servekit.build.options import DEFAULT_BUILD_DIR, ExportOptions
from servekit.build.user_model import UserModelError
from servekit.build.validate import DEFAULT_ATOL, DEFAULT_RTOL, ExportValidationError
from servekit.build.variants import Gates
from servekit.measure.gpu_report import add_arguments as add_gpu_report_arguments
from servekit.serve.by_hand import ServeError
from servekit.serve.client import UnsafeRegistration
from servekit.serve.torchserve import UnsafeModelStore

T = TypeVar("T")
REPORTS_HELP = "write the report's .md/.json here (its make target passes reports); default: print it, write nothing"
TRACEBACK_ENV = "SERVEKIT_TRACEBACK"
# What a user can fix from the message alone: a bad model or file, a failed check, an unsafe store, a
# build step (archive.sh) that said why on its own stderr.
USER_ERRORS = (ExportValidationError, UserModelError, ConfigError, UnsafeModelStore, OSError,
               subprocess.CalledProcessError, ServeError, UnsafeRegistration)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # not the user's fault: say so in one line; the traceback on request
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"error: unexpected {type(err).__name__}: {one_line(err)} (set {TRACEBACK_ENV}=1 for the traceback)",
              file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its options."""
    parser = argparse.ArgumentParser(prog="servekit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the demo models on scikit-learn's digits")
    train.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    train.set_defaults(run=_train)

    export = commands.add_parser("export", help="export + validate a model into BUILD_DIR/NAME")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", help="a trained demo model: digits_mlp or digits_cnn")
    source.add_argument("--factory", help="your model: 'package.module:function' returning an nn.Module")
    weights = export.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path, help="state_dict file for --factory (required unless --random-weights)")
    weights.add_argument("--random-weights", action="store_true",
                         help="export the factory's own initialisation on purpose (a smoke test, not a trained model)")
    export.add_argument("--name", help="model name (archive names derive from it)")
    export.add_argument("--task", choices=TASKS, help="what the outputs mean (required with --factory)")
    export.add_argument("--input", action="append", dest="inputs", metavar="NAME:DTYPE:DIMS[:MIN..MAX]",
                        help="one model input, in the order forward() takes them; DIMS per instance, '..' marks a "
                             "dynamic dimension: input_ids:int64:1..128:0..29999 or x:float32:13 or image:float32:3,32,32")
    export.add_argument("--output", action="append", dest="outputs", metavar="NAME",
                        help=f"model output names, in the order forward() returns them (default: {OUTPUT_NAME})")
    export.add_argument("--input-name", default="input", help="one float32 input: its name (or use --input)")
    export.add_argument("--input-shape", help="one float32 input: per-instance shape without batch, e.g. 3,32,32")
    export.add_argument("--min", type=float, dest="min_value", help="smallest allowed input value")
    export.add_argument("--max", type=float, dest="max_value", help="largest allowed input value")
    export.add_argument("--labels", help="comma-separated class labels")
    export.add_argument("--multi-label", action="store_true", help="classification: sigmoid per class, not softmax")
    export.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="multi-label: predicted at or above")
    export.add_argument("--normalize", action="store_true", help="embedding: L2-normalise each vector")
    export.add_argument("--heldout", type=Path,
                        help="held-out inputs to validate on: .npy [N, *shape], .npz with one array per input, or "
                             "(image inputs) a directory of image files")
    export.add_argument("--tokenizer", type=Path,
                        help="a tokenizers tokenizer.json shipped in the archive: requests may then send text")
    export.add_argument("--rtol", type=float, default=DEFAULT_RTOL)
    export.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    export.add_argument("--formats", default=",".join(EXPORT_FORMATS),
                        help=f"comma-separated subset of {','.join(EXPORT_FORMATS)} (aoti = model.pt2, needs a C++ compiler)")
    add_image_arguments(export)
    _add_batching_arguments(export)
    export.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    export.set_defaults(run=_export)

    demo = commands.add_parser("demo", help="train, export, archive, serve, infer, report, stop")
    demo.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    demo.add_argument("--model-store", type=Path, default=Path("model_store"))
    demo.add_argument("--concurrency", type=int, default=16)
    _add_batching_arguments(demo)
    demo.set_defaults(run=_demo)

    composition = commands.add_parser("composition", help="pipeline + ensemble, in-process and as workflows: "
                                      "serve, compare, accuracy -> reports/composition.md")
    composition.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    composition.add_argument("--model-store", type=Path, default=Path("model_store"))
    composition.add_argument("--reports-dir", type=Path, default=None,
                             help="write composition.{md,json} here (reports: the tracked ones); default: print only")
    composition.add_argument("--concurrency", type=int, default=16)
    composition.add_argument("--runs", type=int, default=1,
                             help="send the held-out images this many times each way (workflow losses vary by run)")
    composition.add_argument("--bench", type=float, default=0.0, metavar="SECONDS",
                             help="also measure workflow vs in-process with wrk for SECONDS per concurrency")
    _add_batching_arguments(composition)
    composition.set_defaults(run=_composition)

    variants = commands.add_parser("variants", help="INT8 / pruned / FP16 variants: gate, archive, measure, report")
    variants.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    variants.add_argument("--model-store", type=Path, default=Path("model_store"))
    variants.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    variants.add_argument("--prune-amount", type=float, default=DEFAULT_PRUNE_AMOUNT)
    variants.add_argument("--finetune-epochs", type=int, default=0, help="recover accuracy after pruning")
    variants.add_argument("--max-accuracy-drop", type=float, default=Gates().max_accuracy_drop, help="points below FP32")
    variants.add_argument("--min-agreement", type=float, default=Gates().min_agreement, help="top-1 agreement with FP32")
    variants.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as the handler)")
    variants.add_argument("--factory", help="your model (as for export); default: the demo models")
    variant_weights = variants.add_mutually_exclusive_group()
    variant_weights.add_argument("--weights", type=Path, help="state_dict file for --factory (as for export)")
    variant_weights.add_argument("--random-weights", action="store_true", help="as for export")
    variants.add_argument("--name", help="your model's name: build/NAME must come from 'servekit export'")
    variants.add_argument("--heldout", type=Path, help="your held-out inputs: .npy [N, *shape], or .npz per input")
    variants.add_argument("--heldout-labels", type=Path, help="their integer labels .npy [N]")
    variants.add_argument("--calibration", type=Path, help="training inputs (.npy or .npz) for static INT8 and fine-tuning")
    variants.add_argument("--calibration-labels", type=Path, help="their labels .npy (needed with --finetune-epochs)")
    variants.set_defaults(run=_variants)

    archive = commands.add_parser("archive", help="archive.sh from any folder: BUILD_DIR/* (or DIRS) -> MODEL_STORE/*.mar")
    archive.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="model folders (default: every one in --build-dir)")
    archive.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    archive.add_argument("--model-store", type=Path, default=Path("model_store"))
    archive.set_defaults(run=_archive)

    serve = commands.add_parser("serve", help="start TorchServe in the background, every file it writes (pid file, "
                                "logs, key file) in a folder of its own; prints the URLs and where the tokens are")
    serve.add_argument("--model-store", type=Path, default=Path("model_store"))
    serve.add_argument("--dir", type=Path, default=Path("serving"), help="the server's own folder (default: serving)")
    serve.add_argument("--config", type=Path, default=None, help="config.properties to start from (default: servekit's)")
    serve.add_argument("--ports", choices=("config", "auto"), default="config",
                       help="the config's ports (8080-8082, 7070-7071) or free ones (written to DIR/serve.env)")
    serve.add_argument("--models", nargs="*", default=(), metavar="NAME.mar", help="archives to load at start")
    serve.set_defaults(run=_serve)

    stop = commands.add_parser("stop", help="stop the TorchServe that 'servekit serve' started from --dir (only that one)")
    stop.add_argument("--dir", type=Path, default=Path("serving"))
    stop.set_defaults(run=_stop)

    bench = commands.add_parser("bench", help="served throughput/latency: ours vs plain vs no-op vs in-process")
    bench.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR / "bench")
    bench.add_argument("--reports-dir", type=Path, default=Path("reports"))
    bench.add_argument("--concurrency", default="1,4,16,64", help="comma-separated connection counts")
    bench.add_argument("--duration", type=float, default=8.0, help="seconds per concurrency level")
    bench.add_argument("--models", default="digits_mlp,bench_cnn")
    bench.add_argument("--threads", type=int, default=0, help="handler intra-op threads (0 = (cores - 1) / workers)")
    bench.add_argument("--no-decode", action="store_true", help="run workers with TS_DECODE_INPUT_REQUEST=false")
    bench.add_argument("--images", action="store_true", help="ResNet-18 with JPEG bodies: ours vs the reference "
                       "image handler vs no-op vs in-process -> reports/bench_images.md")
    bench.add_argument("--sweep", action="store_true", help="try batch_size x max_batch_delay x workers x threads")
    bench.add_argument("--sweep-model", default="bench_cnn")
    bench.add_argument("--sweep-batch-sizes", default="8,16,32")
    bench.add_argument("--sweep-delays", default="2,5,10", help="max_batch_delay values, ms")
    bench.add_argument("--sweep-workers", default="1,2")
    bench.add_argument("--sweep-threads", default="1,2")
    bench.add_argument("--sweep-concurrency", type=int, default=64)
    _add_batching_arguments(bench)
    bench.set_defaults(run=_bench)

    reliability = commands.add_parser("reliability", help="bad-input matrix, faults, access -> reports/reliability.md")
    reliability.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    reliability.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    reliability.set_defaults(run=_reliability)

    text = commands.add_parser("text-model", help="BERT-style model: INT8 speed-up and agreement, served batching "
                               "-> reports/text_model.md (needs the 'text' extra)")
    text.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR / "text_model")
    text.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    text.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the in-process timing")
    text.add_argument("--epochs", type=int, default=4)
    text.set_defaults(run=_text_model)

    images = commands.add_parser("images", help="an image classifier end to end: ResNet-18 trained on digit images, "
                                 "exported with declared preprocessing, variants gated; decode measured -> reports/images.md")
    images.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    images.add_argument("--model-store", type=Path, default=Path("model_store"))
    images.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    images.add_argument("--epochs", type=int, default=3, help="training passes (each one to two minutes on 2 cores)")
    images.add_argument("--no-variants", action="store_true", help="skip the INT8/FP16/pruned variants")
    images.set_defaults(run=_images)

    soak = commands.add_parser("soak", help="sustained load for minutes -> reports/soak.md (not in make test)")
    soak.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR / "soak")
    soak.add_argument("--reports-dir", type=Path, default=Path("reports"))
    soak.add_argument("--minutes", type=float, default=5.0)
    soak.add_argument("--concurrency", type=int, default=16)
    soak.set_defaults(run=_soak)

    gpu = commands.add_parser("gpu-report", help="every variant in-process on GPU vs this machine's CPU -> reports/gpu.md")
    add_gpu_report_arguments(gpu)
    gpu.set_defaults(run=_gpu_report)
    return parser


def one_line(err: BaseException) -> str:
    """An error's message on one line: a multi-line report (export validation) joined with '; '."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Batching()
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-batch-delay", type=int, default=defaults.max_batch_delay_ms, help="milliseconds")
    parser.add_argument("--workers", type=int, default=defaults.max_workers)


def _batching(args: argparse.Namespace) -> Batching:
    return Batching(batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay,
                    min_workers=args.workers, max_workers=args.workers)


def _train(args: argparse.Namespace) -> int:
    from servekit.examples.data import load_digits_split
    from servekit.examples.models import DEMO_MODELS
    from servekit.examples.train import train_demo

    split = load_digits_split()
    for spec in DEMO_MODELS.values():
        metrics = train_demo(spec, split, args.build_dir / spec.name)
        print(f"trained {spec.name}: held-out accuracy {metrics['test_accuracy']:.2%} "
              f"({metrics['test_samples']} images, {metrics['train_seconds']}s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from servekit.build.options import export_build, export_user_model, parse_formats

    if args.demo:
        from servekit.examples.demo import demo_build_inputs

        model, build, heldout = demo_build_inputs(args.demo, args.build_dir, _batching(args))
        export_build(model, replace(build, formats=parse_formats(args.formats)), heldout, args.build_dir,
                     args.rtol, args.atol)
        return 0
    export_user_model(_options(ExportOptions, args, inputs=tuple(args.inputs or ()),
                               outputs=tuple(args.outputs or ()), batching=_batching(args)))
    return 0


def _options(cls: type[T], args: argparse.Namespace, **given: object) -> T:
    """A library options dataclass from the parsed flags of the same names."""
    names = {f.name for f in fields(cls)} - set(given)
    return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)}, **given)


def _demo(args: argparse.Namespace) -> int:
    from servekit.examples.demo import run_demo

    return run_demo(args.build_dir, args.model_store, _batching(args), args.concurrency)


def _composition(args: argparse.Namespace) -> int:
    from servekit.measure.composition_report import run_composition

    return run_composition(args.build_dir, args.model_store, args.reports_dir, _batching(args), args.concurrency,
                           bench_seconds=args.bench, runs=args.runs)


def _bench(args: argparse.Namespace) -> int:
    from servekit.measure.bench.main import run_benchmark
    from servekit.measure.bench.run import Setting

    if args.sweep:
        from servekit.measure.bench.sweep import run_sweep

        ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
        run_sweep(args.sweep_model, args.build_dir / "sweep", args.reports_dir, ints(args.sweep_batch_sizes),
                  ints(args.sweep_delays), ints(args.sweep_workers), ints(args.sweep_threads),
                  args.sweep_concurrency, args.duration)
        return 0
    setting = Setting(args.batch_size, args.max_batch_delay, args.workers)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.images:
        from servekit.measure.bench.images import run_image_benchmark

        run_image_benchmark(args.build_dir / "images", args.reports_dir, concurrencies, args.duration, setting,
                            args.threads)
        return 0
    run_benchmark(args.build_dir, args.reports_dir, concurrencies, args.duration, setting,
                  decode_input=not args.no_decode, models=tuple(args.models.split(",")), threads=args.threads)
    return 0


def _reliability(args: argparse.Namespace) -> int:
    from servekit.measure.reliability_report import run_reliability

    doc = run_reliability(args.build_dir, args.reports_dir)
    bad = [c for m in doc["matrix"] for c in m["cases"] if not c["passed"]]
    harmed = sum(m["good_failures"] for m in doc["matrix"]) + sum(f["lost"] for f in doc["faults"])
    return 1 if bad or harmed or not all(a["refused"] for a in doc["access"]) else 0


def _text_model(args: argparse.Namespace) -> int:
    from servekit.measure.text_report import run_text_report

    run_text_report(args.build_dir, args.reports_dir, args.threads, args.epochs)
    return 0


def _images(args: argparse.Namespace) -> int:
    from servekit.measure.images_report import run_images

    run_images(args.build_dir, args.model_store, args.reports_dir, args.epochs, variants=not args.no_variants)
    return 0


def _soak(args: argparse.Namespace) -> int:
    from servekit.measure.soak import run_soak

    return 0 if run_soak(args.build_dir, args.reports_dir, args.minutes, args.concurrency)["passed"] else 1


def _gpu_report(args: argparse.Namespace) -> int:
    from servekit.measure.gpu_report import run_report

    return run_report(args.build_dir, args.reports_dir, args.batch_sizes, args.seconds, args.rounds, args.prepare_only)


def _serve(args: argparse.Namespace) -> int:
    from servekit.serve.by_hand import ServeFolder, serve
    from servekit.serve.torchserve import DEFAULT_CONFIG

    client = serve(args.model_store, args.dir, args.config or DEFAULT_CONFIG, "auto" if args.ports == "auto" else None,
                   tuple(args.models))
    home = ServeFolder(args.dir)
    print(f"TorchServe is up (pid {home.running_pid()}), serving {args.model_store}/ from {args.dir}/")
    print(f"  inference   {client.inference_url}\n  management  {client.management_url}\n  metrics     {client.metrics_url}")
    print(f"  tokens      {home.key_file} (send 'Authorization: Bearer <key>': its inference key for predictions, "
          "its management key for /models)")
    print(f"  logs        {home.logs}/\n  for scripts source {home.env_file}")
    print(f"stop it with: servekit stop --dir {args.dir}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from servekit.serve.by_hand import stop

    pid = stop(args.dir)
    print(f"stopped the TorchServe of {args.dir}/ (pid {pid})" if pid else f"no TorchServe started from {args.dir}/ runs")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from servekit.build.archiving import run_archive_sh

    try:
        run_archive_sh(args.dirs, args.model_store, build_dir=args.build_dir)
    except subprocess.CalledProcessError as err:
        return err.returncode  # archive.sh said why on stderr, in one line
    return 0


def _variants(args: argparse.Namespace) -> int:
    from servekit.measure.variants_report import demo_variant_inputs, run_variants

    gates = Gates(args.max_accuracy_drop, args.min_agreement)
    if args.factory:
        from servekit.build.options import VariantOptions, user_variant_inputs

        jobs = [user_variant_inputs(_options(VariantOptions, args))]
    else:
        jobs = demo_variant_inputs(args.build_dir)
    run_variants(jobs, args.model_store, args.reports_dir, gates, args.prune_amount, args.finetune_epochs, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
