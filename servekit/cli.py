"""``servekit``: one console entry point; each step of the path is a subcommand."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TypeVar

# Only torch-free modules at the top: `servekit --help` and `--version` answer without importing torch
# (tests/unit/test_cli_help.py checks); each subcommand imports what it runs.
from handlers.config import DEFAULT_THRESHOLD, TASKS
from handlers.errors import ConfigError
from servekit.build import defaults
from servekit.build.images import add_image_arguments
from servekit.build.model_config import Batching
from servekit.measure.gpu_options import add_arguments as add_gpu_report_arguments
from servekit.serve.by_hand import ServeError
from servekit.serve.client import UnsafeRegistration
from servekit.serve.torchserve import UnsafeModelStore

T = TypeVar("T")
REPORTS_HELP = "write the report's .md/.json here (its make target passes reports); default: print it, write nothing"
TRACEBACK_ENV = "SERVEKIT_TRACEBACK"
# What a user can fix from the message alone: a bad model or file, a failed check, an unsafe store, a
# build step (archive.sh) that said why on its own stderr.
USER_ERRORS = (ConfigError, UnsafeModelStore, OSError, subprocess.CalledProcessError, ServeError, UnsafeRegistration)
# The same, from modules that import torch: looked up only once a subcommand has imported them (an error
# cannot be one of their types otherwise).
LAZY_USER_ERRORS = (("servekit.build.user_model", "UserModelError"), ("servekit.build.validate", "ExportValidationError"))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as err:
        if is_user_error(err):
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2
        # not the user's fault: say so in one line; the traceback on request
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"error: unexpected {type(err).__name__}: {one_line(err)} (set {TRACEBACK_ENV}=1 for the traceback)",
              file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its options; every option says what it does (a test walks the parser)."""
    parser = argparse.ArgumentParser(prog="servekit", description=__doc__,
                                     epilog="Each subcommand has its own --help. Docs: docs/README.md")
    parser.add_argument("--version", action="version", version=f"%(prog)s {servekit_version()}",
                        help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build, store, reports = defaults.DEFAULT_BUILD_DIR, defaults.DEFAULT_MODEL_STORE, defaults.DEFAULT_REPORTS_DIR

    train = commands.add_parser("train", help="train the demo models on scikit-learn's digits")
    _add_dir(train, "--build-dir", build, "where each model's weights.pt and metrics.json go")
    train.set_defaults(run=_train)

    export = commands.add_parser("export", help="export + validate a model into BUILD_DIR/NAME")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", help="a trained demo model: digits_mlp or digits_cnn")
    source.add_argument("--factory", help="your model: 'package.module:function' returning an nn.Module")
    source.add_argument("--transformers", type=Path, metavar="DIR",
                        help="a transformers save_pretrained folder: task, labels, inputs, tokenizer and "
                             "preprocessing are read from it (see docs/transformers.md)")
    weights = export.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path,
                         help="state_dict file for --factory, loaded with weights_only=True (required unless "
                              "--random-weights)")
    weights.add_argument("--random-weights", action="store_true",
                         help="export the factory's own initialisation on purpose (a smoke test, not a trained model)")
    export.add_argument("--name", help="model name (archive names derive from it)")
    export.add_argument("--task", choices=TASKS, help="what the outputs mean (required with --factory)")
    export.add_argument("--input", action="append", dest="inputs", metavar="NAME:DTYPE:DIMS[:MIN..MAX]",
                        help="one model input, in the order forward() takes them; DIMS per instance, '..' marks a "
                             "dynamic dimension: input_ids:int64:1..128:0..29999 or x:float32:13 or image:float32:3,32,32")
    export.add_argument("--output", action="append", dest="outputs", metavar="NAME",
                        help=f"model output names, in the order forward() returns them (default: {defaults.OUTPUT_NAME})")
    export.add_argument("--input-name", default="input", help="one float32 input: its name (or use --input)")
    export.add_argument("--input-shape", help="one float32 input: per-instance shape without batch, e.g. 3,32,32")
    export.add_argument("--min", type=float, dest="min_value", help="smallest allowed input value")
    export.add_argument("--max", type=float, dest="max_value", help="largest allowed input value")
    export.add_argument("--labels", help="comma-separated class labels, one per class the model answers")
    export.add_argument("--multi-label", action="store_true", help="classification: sigmoid per class, not softmax")
    export.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="multi-label: a class is predicted at or above this probability (default: %(default)s)")
    export.add_argument("--normalize", action="store_true", help="embedding: L2-normalise each vector")
    export.add_argument("--heldout", type=Path,
                        help="held-out inputs to validate on: .npy [N, *shape], .npz with one array per input, "
                             "(image inputs) a directory of image files; --transformers also: a .txt of sentences "
                             "(question<TAB>context lines for QA) or a directory of WAV files")
    export.add_argument("--tokenizer", type=Path,
                        help="a tokenizers tokenizer.json shipped in the archive: requests may then send text")
    export.add_argument("--rtol", type=float, default=defaults.DEFAULT_RTOL,
                        help="relative tolerance of every export against eager PyTorch (default: %(default)s)")
    export.add_argument("--atol", type=float, default=defaults.DEFAULT_ATOL,
                        help="absolute tolerance of every export against eager PyTorch (default: %(default)s)")
    formats = ",".join(defaults.FORMATS)
    export.add_argument("--formats", default=formats,
                        help=f"comma-separated subset of {formats} (aoti = model.pt2, needs a C++ compiler)")
    _add_checkpoint_arguments(export)
    add_image_arguments(export)
    _add_batching_arguments(export)
    _add_dir(export, "--build-dir", build, "the model's folder is written to BUILD_DIR/NAME")
    export.set_defaults(run=_export)

    archive = commands.add_parser("archive", help="archive exported model folders into the model store "
                                  "(the packaged archive.sh: one .mar per model and format)")
    archive.add_argument("model_dirs", nargs="*", type=Path, metavar="MODEL_DIR",
                         help="folders written by 'servekit export' (default: every one under BUILD_DIR)")
    _add_dir(archive, "--build-dir", build, "where to look when no MODEL_DIR is given")
    _add_dir(archive, "--model-store", store, "where the archives go")
    archive.set_defaults(run=_archive)

    demo = commands.add_parser("demo", help="train, export, archive, serve, infer, report, stop")
    _add_dir(demo, "--build-dir", build, "where the demo models are trained and exported")
    _add_dir(demo, "--model-store", store, "where the archives go")
    demo.add_argument("--concurrency", type=int, default=16, help="clients in flight for the .npy round (default: %(default)s)")
    _add_batching_arguments(demo)
    demo.set_defaults(run=_demo)

    composition = commands.add_parser("composition", help="pipeline + ensemble, in-process and as workflows: "
                                      "serve, compare, accuracy -> reports/composition.md")
    _add_dir(composition, "--build-dir", build, "where members and compositions are built")
    _add_dir(composition, "--model-store", store, "where the .mar and .war archives go")
    composition.add_argument("--reports-dir", type=Path, default=None,
                             help="write composition.{md,json} here (reports: the tracked ones); default: print only")
    composition.add_argument("--concurrency", type=int, default=16, help="clients in flight (default: %(default)s)")
    composition.add_argument("--runs", type=int, default=1,
                             help="send the held-out images this many times each way (workflow losses vary by run)")
    composition.add_argument("--bench", type=float, default=0.0, metavar="SECONDS",
                             help="also measure workflow vs in-process with wrk for SECONDS per concurrency")
    _add_batching_arguments(composition)
    composition.set_defaults(run=_composition)

    variants = commands.add_parser("variants", help="INT8 / pruned / FP16 variants: gate, archive, measure, report")
    _add_dir(variants, "--build-dir", build, "where the exported models are and the variants go")
    _add_dir(variants, "--model-store", store, "where the passing variants are archived")
    variants.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    variants.add_argument("--prune-amount", type=float, default=defaults.DEFAULT_PRUNE_AMOUNT,
                          help="share of conv/linear weights zeroed by global L1 pruning (default: %(default)s)")
    variants.add_argument("--finetune-epochs", type=int, default=0, help="recover accuracy after pruning (default: none)")
    variants.add_argument("--max-accuracy-drop", type=float, default=defaults.MAX_ACCURACY_DROP,
                          help="gate: at most this many accuracy points below FP32 (default: %(default)s)")
    variants.add_argument("--min-agreement", type=float, default=defaults.MIN_AGREEMENT,
                          help="gate: at least this top-1 agreement with FP32 (default: %(default)s)")
    variants.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as the handler)")
    variants.add_argument("--factory", help="your model (as for export); default: the demo models")
    variant_weights = variants.add_mutually_exclusive_group()
    variant_weights.add_argument("--weights", type=Path, help="your model's state_dict (as for export)")
    variant_weights.add_argument("--random-weights", action="store_true", help="as for export")
    variants.add_argument("--name", help="your model's name: build/NAME must come from 'servekit export'")
    variants.add_argument("--heldout", type=Path, help="your held-out inputs: .npy [N, *shape], or .npz per input")
    variants.add_argument("--heldout-labels", type=Path, help="their integer labels .npy [N]")
    variants.add_argument("--calibration", type=Path, help="training inputs (.npy or .npz) for static INT8 and fine-tuning")
    variants.add_argument("--calibration-labels", type=Path, help="their labels .npy (needed with --finetune-epochs)")
    variants.set_defaults(run=_variants)

    serve = commands.add_parser("serve", help="start TorchServe in the background, every file it writes (pid file, "
                                "logs, key file) in a folder of its own; prints the URLs and where the tokens are")
    _add_dir(serve, "--model-store", store, "the archives it serves")
    _add_dir(serve, "--dir", Path("serving"), "the server's own folder: pid file, logs, key file, config")
    serve.add_argument("--config", type=Path, default=None, help="config.properties to start from (default: servekit's)")
    serve.add_argument("--ports", choices=("config", "auto"), default="config",
                       help="the config's ports (8080-8082, 7070-7071) or free ones, written to DIR/serve.env "
                            "(default: %(default)s)")
    serve.add_argument("--models", nargs="*", default=(), metavar="NAME.mar", help="archives to load at start")
    serve.set_defaults(run=_serve)

    stop = commands.add_parser("stop", help="stop the TorchServe that 'servekit serve' started from --dir (only that one)")
    _add_dir(stop, "--dir", Path("serving"), "the folder 'servekit serve' was started with")
    stop.set_defaults(run=_stop)

    bench = commands.add_parser("bench", help="served throughput/latency: ours vs plain vs no-op vs in-process")
    _add_dir(bench, "--build-dir", build / "bench", "where the benchmark's models and archives are built")
    _add_dir(bench, "--reports-dir", reports, "where bench.{md,json,png} (or bench_sweep, bench_images) go")
    bench.add_argument("--concurrency", default="1,4,16,64", help="comma-separated connection counts (default: %(default)s)")
    bench.add_argument("--duration", type=float, default=8.0, help="seconds per concurrency level (default: %(default)s)")
    bench.add_argument("--models", default="digits_mlp,bench_cnn", help="comma-separated models (default: %(default)s)")
    bench.add_argument("--threads", type=int, default=0, help="handler intra-op threads (0 = measured per model at worker start)")
    bench.add_argument("--no-decode", action="store_true", help="run workers with TS_DECODE_INPUT_REQUEST=false")
    bench.add_argument("--images", action="store_true", help="ResNet-18 with JPEG bodies: ours vs the reference "
                       "image handler vs no-op vs in-process -> reports/bench_images.md")
    bench.add_argument("--text", action="store_true", help="a trained BERT with realistic sentence lengths: ours "
                       "FP32/INT8 vs the docs-style handler vs no-op vs LitServe vs in-process -> reports/bench_text.md")
    bench.add_argument("--sweep", action="store_true", help="try batch_size x max_batch_delay x workers x threads")
    bench.add_argument("--sweep-model", default="bench_cnn", help="the model the sweep serves (default: %(default)s)")
    bench.add_argument("--sweep-batch-sizes", default="8,16,32", help="batch sizes to try (default: %(default)s)")
    bench.add_argument("--sweep-delays", default="2,5,10", help="max_batch_delay values, ms (default: %(default)s)")
    bench.add_argument("--sweep-workers", default="1,2", help="worker counts to try (default: %(default)s)")
    bench.add_argument("--sweep-threads", default="1,2", help="intra-op thread counts to try (default: %(default)s)")
    bench.add_argument("--sweep-concurrency", type=int, default=64, help="wrk connections (default: %(default)s)")
    _add_batching_arguments(bench)
    bench.set_defaults(run=_bench)

    tune = commands.add_parser("tune", help="search batching, workers and threads for one archive against a real "
                               "TorchServe on this machine; write the best into its model-config.yaml")
    tune.add_argument("target", type=Path, help="a .mar, or a build folder as 'servekit export' writes it")
    tune.add_argument("--bodies", type=Path, help="a folder of request bodies (default: generated from the signature)")
    tune.add_argument("--p99-ms", type=float, help="latency bound: the best point must keep p99 within it")
    tune.add_argument("--concurrency", type=int, default=16, help="concurrent clients, wrk connections (default: %(default)s)")
    tune.add_argument("--duration", type=float, default=6.0, help="seconds of load per point, after a warm-up (default: %(default)s)")
    tune.add_argument("--max-points", type=int, default=24, help="at most this many points measured (default: %(default)s)")
    tune.add_argument("--grid", action="store_true", help="also measure the full grid, to judge the search")
    tune.add_argument("--no-write", action="store_true", help="report only; leave the archive as it is")
    _add_dir(tune, "--work-dir", build / "tune", "where the tuner's TorchServe and its copies of the archive live")
    _add_dir(tune, "--reports-dir", reports, "where tune_NAME.{md,json,png} go")
    tune.set_defaults(run=_tune)

    reliability = commands.add_parser("reliability", help="bad-input matrix, faults, access -> reports/reliability.md")
    _add_dir(reliability, "--build-dir", build, "where the demo models are (trained if missing)")
    reliability.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    reliability.set_defaults(run=_reliability)

    text = commands.add_parser("text-model", help="BERT-style model: INT8 speed-up and agreement, served batching "
                               "-> reports/text_model.md (needs the 'text' extra)")
    _add_dir(text, "--build-dir", build / "text_model", "where the model, its data and archives are built")
    text.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    text.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the in-process timing")
    text.add_argument("--epochs", type=int, default=4, help="training passes (default: %(default)s)")
    text.set_defaults(run=_text_model)

    images = commands.add_parser("images", help="an image classifier end to end: ResNet-18 trained on digit images, "
                                 "exported with declared preprocessing, variants gated; decode measured -> reports/images.md")
    _add_dir(images, "--build-dir", build, "where the image model is built")
    _add_dir(images, "--model-store", store, "where its archives go")
    images.add_argument("--reports-dir", type=Path, default=None, help=REPORTS_HELP)
    images.add_argument("--epochs", type=int, default=3, help="training passes (each one to two minutes on 2 cores)")
    images.add_argument("--no-variants", action="store_true", help="skip the INT8/FP16/pruned variants")
    images.set_defaults(run=_images)

    soak = commands.add_parser("soak", help="sustained load for minutes -> reports/soak.md (not in make test)")
    _add_dir(soak, "--build-dir", build / "soak", "where the soaked model is built")
    _add_dir(soak, "--reports-dir", reports, "where soak.{md,json} are written")
    soak.add_argument("--minutes", type=float, default=5.0, help="how long to keep the load on (default: %(default)s)")
    soak.add_argument("--concurrency", type=int, default=16, help="wrk connections (default: %(default)s)")
    soak.set_defaults(run=_soak)

    served = commands.add_parser("gpu-served", help="TorchServe + our handler on CUDA beside the same archives on "
                                 "the CPU, every answer checked -> reports/gpu_served.md (needs Java; a GPU for the CUDA rows)")
    _add_dir(served, "--build-dir", build, "where the archives are prepared (BUILD_DIR/gpu_served)")
    _add_dir(served, "--reports-dir", reports, "where gpu_served.{md,json} go")
    served.add_argument("--prepare-only", action="store_true",
                        help="export, validate and archive on this machine, to carry to a GPU machine")
    served.set_defaults(run=_gpu_served)

    zoo = commands.add_parser("zoo-report", help="every zoo architecture exported with --transformers, each format and "
                              "dynamic INT8 validated -> reports/zoo.md (about half an hour on 2 cores)")
    _add_dir(zoo, "--build-dir", build / "zoo", "where each architecture's folder and exports are written")
    _add_dir(zoo, "--reports-dir", reports, "where zoo.{md,json} go")
    zoo.add_argument("--only", default="", help="comma-separated zoo names (default: all)")
    zoo.add_argument("--resume", action="store_true", help="keep the rows reports/zoo.json holds; measure the rest")
    zoo.set_defaults(run=_zoo_report)

    gpu = commands.add_parser("gpu-report", help="every variant in-process on GPU vs this machine's CPU -> reports/gpu.md")
    add_gpu_report_arguments(gpu)
    gpu.set_defaults(run=_gpu_report)
    return parser


def _add_dir(parser: argparse.ArgumentParser, flag: str, default: Path, what: str) -> None:
    parser.add_argument(flag, type=Path, default=default, help=f"{what} (default: %(default)s)")


def is_user_error(err: BaseException) -> bool:
    """Whether the user can fix ``err`` from its message alone (exit status 2, no traceback offered)."""
    lazy = tuple(getattr(sys.modules[module], name) for module, name in LAZY_USER_ERRORS if module in sys.modules)
    return isinstance(err, USER_ERRORS + lazy)


def servekit_version() -> str:
    """The installed distribution's version (a source tree that was never installed says so)."""
    try:
        return version("servekit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def one_line(err: BaseException) -> str:
    """An error's message on one line: a multi-line report (export validation) joined with '; '."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--transformers`` options: what the folder may not say, or what to serve differently."""
    from handlers.config import AGGREGATIONS, DEFAULT_AGGREGATION
    from servekit.build.defaults import DEFAULT_MAX_SECONDS, POOLINGS

    group = parser.add_argument_group("transformers folder (--transformers DIR)")
    group.add_argument("--pooling", choices=POOLINGS, help="a base model (no head): serve embeddings pooled so")
    group.add_argument("--max-length", type=int, help="text: the longest input in tokens (default: the model's, at most 512)")
    group.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                       help="audio: the longest clip, in seconds (default: %(default)s)")
    group.add_argument("--aggregation", choices=AGGREGATIONS, default=DEFAULT_AGGREGATION,
                       help="token classification: every token (none) or entities (simple) (default: %(default)s)")
    group.add_argument("--pad-token-id", type=int, help="the padding id when config.json has none (GPT-2 classifiers)")
    group.add_argument("--architecture", help="the model class when config.json names none or several")


def _add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    batching = Batching()
    parser.add_argument("--batch-size", type=int, default=batching.batch_size,
                        help="TorchServe's batch_size: requests run together (default: %(default)s)")
    parser.add_argument("--max-batch-delay", type=int, default=batching.max_batch_delay_ms,
                        help="ms TorchServe waits to fill a batch (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=batching.max_workers,
                        help="workers per model (default: %(default)s)")


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
    from servekit.build.options import ExportOptions, export_build, export_user_model, parse_formats

    if args.demo:
        from servekit.examples.demo import demo_build_inputs

        model, build, heldout = demo_build_inputs(args.demo, args.build_dir, _batching(args))
        export_build(model, replace(build, formats=parse_formats(args.formats)), heldout, args.build_dir,
                     args.rtol, args.atol)
        return 0
    if args.transformers:
        from servekit.build.checkpoint.derive import CheckpointOptions
        from servekit.build.checkpoint.export import TransformersOptions, export_transformers

        checkpoint = _options(CheckpointOptions, args, image_crop=args.image_crop)
        export_transformers(_options(TransformersOptions, args, folder=args.transformers, checkpoint=checkpoint,
                                     batching=_batching(args)))
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
    if args.text:
        from servekit.measure.bench.text import run_text_benchmark

        run_text_benchmark(args.build_dir / "text", args.reports_dir, args.duration, setting)
        return 0
    if args.images:
        from servekit.measure.bench.images import run_image_benchmark

        run_image_benchmark(args.build_dir / "images", args.reports_dir, concurrencies, args.duration, setting,
                            args.threads)
        return 0
    run_benchmark(args.build_dir, args.reports_dir, concurrencies, args.duration, setting,
                  decode_input=not args.no_decode, models=tuple(args.models.split(",")), threads=args.threads)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from servekit.measure.tune.report import write_tune_report
    from servekit.measure.tune.run import run_tune

    result = run_tune(args.target, args.work_dir / args.target.stem, args.bodies, args.p99_ms, args.concurrency,
                      args.duration, args.max_points, grid=args.grid, write=not args.no_write)
    print(f"wrote {write_tune_report(result, args.reports_dir)}")
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


def _zoo_report(args: argparse.Namespace) -> int:
    from servekit.measure.zoo_report import run_zoo_report

    rows = run_zoo_report(args.build_dir, args.reports_dir, tuple(n for n in args.only.split(",") if n), args.resume)
    return 0 if all(row.as_expected for row in rows) else 1


def _gpu_report(args: argparse.Namespace) -> int:
    from servekit.measure.gpu_report import run_report

    return run_report(args.build_dir, args.reports_dir, args.batch_sizes, args.seconds, args.rounds, args.prepare_only)


def _gpu_served(args: argparse.Namespace) -> int:
    from servekit.measure import gpu_served

    if args.prepare_only:
        print(f"prepared {gpu_served.prepare(args.build_dir)}")
        return 0
    doc = gpu_served.run(args.build_dir, args.reports_dir)
    wrong = sum(row["wrong_class"] for row in doc["served"])
    return 1 if wrong else 0
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
        run_archive_sh(args.model_dirs, args.model_store, build_dir=args.build_dir)
    except subprocess.CalledProcessError as err:
        return err.returncode  # archive.sh said why on stderr, in one line
    return 0


def _variants(args: argparse.Namespace) -> int:
    from servekit.build.variants import Gates
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
