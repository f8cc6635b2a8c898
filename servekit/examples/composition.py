"""Build the composition demo: three member models, a pipeline and an ensemble, each two ways.

    preprocess (raw 0..255 image -> [0, 1]) -> member(s) -> weighted mean of probabilities -> top-k

* in-process: one .mar whose model-config.yaml lists the members (``handler.composition``);
  the classifier handler runs them all in one worker (``handlers/composed_model.py``).
* workflow: one .war whose DAG runs ``preprocess`` -> member .mar(s) -> ``postprocess`` or
  ``aggregate`` (``handlers/workflow_nodes.py``), each node a separate TorchServe model.

Members are the demo MLP and CNN plus a linear model, each wrapped to take the same
``[N, 8, 8]`` image and exported to ONNX (validated like every export).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from handlers.composition import DEFAULT_MEMBER_TIMEOUT_MS, CompositionConfig, MemberSpec
from handlers.config import PROBABILITIES, InputContract
from servekit.build.model_dir import ModelBuild, build_model_dir
from servekit.examples.data import LABELS, DigitsSplit
from servekit.build.export import ONNX_FILE
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching, model_config, write_model_config
from servekit.examples.models import DEMO_MODELS, DIGITS_LINEAR, DemoModel, ImageInput
from servekit.examples.train import train_demo

IMAGE_SHAPE = (8, 8)
RAW_MAX = 255.0  # clients send 8-bit grey levels, as a camera or an image file gives them
RAW_CONTRACT = InputContract("image", IMAGE_SHAPE, "float32", 0.0, RAW_MAX)
MEMBER_CONTRACT = InputContract("image", IMAGE_SHAPE, "float32", 0.0, 1.0)
MEMBER_MODELS: dict[str, DemoModel] = {"mlp": DEMO_MODELS["digits_mlp"], "cnn": DEMO_MODELS["digits_cnn"],
                                       "linear": DIGITS_LINEAR}
WORKFLOW_SPEC_FILE = "workflow.yaml"
COMPOSITION_FILE = "composition.yaml"
MEMBERS_DIR = "members"


@dataclass(frozen=True)
class Composition:
    """A named composition of members with their weights."""

    name: str
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def members(self) -> list[str]:
        """Member names in order."""
        return list(self.weights)

    @property
    def workflow_name(self) -> str:
        """Name of its workflow twin (archive and endpoint)."""
        return f"{self.name}_wf"

    def config(self, timeout_ms: int) -> CompositionConfig:
        """The handler.composition section: member files relative to the archive root."""
        return CompositionConfig(tuple(MemberSpec(m, f"{MEMBERS_DIR}/{m}.onnx", w) for m, w in self.weights.items()),
                                 scale=1.0 / RAW_MAX, member_timeout_ms=timeout_ms)


PIPELINE = Composition("digits_pipeline", {"mlp": 1.0})
ENSEMBLE = Composition("digits_ensemble", {"mlp": 1.0, "cnn": 1.0, "linear": 1.0})


def raw_images(pixels: np.ndarray) -> np.ndarray:
    """Digits pixels (scaled to [0, 1] by data.py) as the 8-bit grey levels clients send: ``[N, 8, 8]``."""
    return (pixels.reshape(-1, *IMAGE_SHAPE) * RAW_MAX).astype(np.float32)


def member_dir(build_dir: Path, member: str) -> Path:
    """Where a member's ONNX file and model-config.yaml live (archived as member_<name>_onnx.mar)."""
    return build_dir / f"member_{member}"


def member_archive(member: str) -> str:
    """The .mar archive.sh writes for a member."""
    return f"member_{member}_onnx.mar"


def build_members(split: DigitsSplit, build_dir: Path, batching: Batching) -> dict[str, Path]:
    """Train (when missing), wrap to the common image input, export to ONNX and validate every member."""
    heldout = split.x_test.reshape(-1, *IMAGE_SHAPE)
    dirs = {}
    for member, spec in MEMBER_MODELS.items():
        weights = build_dir / spec.name / "weights.pt"
        if not weights.exists():
            train_demo(spec, split, build_dir / spec.name)
        model = spec.factory()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        wrapped = ImageInput(model.eval(), spec.input_shape).eval()
        build = ModelBuild(f"member_{member}", MEMBER_CONTRACT, LABELS, batching, top_k=len(LABELS),
                           output=PROBABILITIES, formats=("onnx",))
        print(f"  member {member} ({spec.name}):")
        dirs[member] = build_model_dir(wrapped, build, heldout, member_dir(build_dir, member))
    return dirs


def build_composed(composition: Composition, build_dir: Path, batching: Batching,
                   timeout_ms: int = DEFAULT_MEMBER_TIMEOUT_MS) -> Path:
    """The in-process twin: members' ONNX files and a model-config.yaml with handler.composition."""
    out = build_dir / composition.name
    shutil.rmtree(out, ignore_errors=True)
    (out / MEMBERS_DIR).mkdir(parents=True)
    for member in composition.members:
        shutil.copyfile(member_dir(build_dir, member) / ONNX_FILE, out / MEMBERS_DIR / f"{member}.onnx")
    document = model_config(RAW_CONTRACT, LABELS, batching, composition=composition.config(timeout_ms).to_dict())
    write_model_config(out / MODEL_CONFIG_FILE, document)
    return out


def build_workflow(composition: Composition, build_dir: Path, batching: Batching,
                   timeout_ms: int = DEFAULT_MEMBER_TIMEOUT_MS) -> Path:
    """The workflow twin: workflow.yaml (models + DAG) and composition.yaml for the function nodes."""
    out = build_dir / composition.workflow_name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = workflow_spec(composition, batching, timeout_ms)
    (out / WORKFLOW_SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    document = model_config(RAW_CONTRACT, LABELS, batching, composition=composition.config(timeout_ms).to_dict())
    write_model_config(out / COMPOSITION_FILE, document)
    return out


def workflow_spec(composition: Composition, batching: Batching, timeout_ms: int) -> dict:
    """TorchServe's workflow spec: member models batch like single models; no retries.

    Retries are off because a retried node re-runs with the same input: a timed-out member
    would cost its timeout twice, and a rejected request would be rejected twice.
    """
    models: dict = {"min-workers": batching.min_workers, "max-workers": batching.max_workers,
                    "batch-size": batching.batch_size, "max-batch-delay": batching.max_batch_delay_ms,
                    "retry-attempts": 0, "timeout-ms": timeout_ms}
    for member in composition.members:
        models[member] = {"url": member_archive(member)}
    last = "postprocess" if len(composition.members) == 1 else "aggregate"
    dag: dict = {"preprocess": composition.members}
    for member in composition.members:
        dag[member] = [last]
    return {"models": models, "dag": dag}


def build_all(split: DigitsSplit, build_dir: Path, batching: Batching,
              compositions: tuple[Composition, ...] = (PIPELINE, ENSEMBLE),
              timeout_ms: int = DEFAULT_MEMBER_TIMEOUT_MS) -> list[Path]:
    """Every directory archive.sh needs for the compositions: members, in-process twins, workflows."""
    dirs = list(build_members(split, build_dir, batching).values())
    for composition in compositions:
        dirs.append(build_composed(composition, build_dir, batching, timeout_ms))
        dirs.append(build_workflow(composition, build_dir, batching, timeout_ms))
    return dirs

