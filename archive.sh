#!/usr/bin/env bash
# Build self-contained archives into the model store: one .mar per model and format, and the
# pipelines/ensembles (compositions) both as one in-process .mar and as a workflow .war.
#
#   ./archive.sh                      # every directory under ./build/ (as written by `servekit`)
#   ./archive.sh build/digits_mlp     # just these directories
#   servekit archive [DIRS...]        # the same from any folder (the script ships with servekit)
#
# build/ and model_store/ are those of the current folder, as for every servekit command, so exports,
# archives and variants share one store wherever you work; BUILD_DIR and MODEL_STORE override them.
#
# What a directory holds decides what is built (re-running overwrites: idempotent):
#   model-config.yaml + model.pt / model.onnx / model.pt2
#                                              -> <dir>_ts.mar / <dir>_onnx.mar / <dir>_aoti.mar
#                                                 (+ tokenizer.json if present; only if validation.json
#                                                 vouches for exactly these files)
#   model-config.yaml + members/*.onnx         -> <dir>.mar   (composition run in one worker)
#   workflow.yaml + composition.yaml           -> <dir>.war   (composition as a TorchServe workflow;
#                                                 the member .mar files it names must be in the store)
# Env: BUILD_DIR (./build), MODEL_STORE (./model_store), VERSION (1.0), ARCHIVER (torch-model-archiver),
#      WORKFLOW_ARCHIVER (torch-workflow-archiver).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "archive.sh: unknown option $1 (see archive.sh --help)" >&2; exit 2 ;;
esac

# In a checkout this file sits beside handlers/ (servekit/build/archive.sh links here); in an installed
# servekit it is package data (servekit/build/archive.sh), and handlers/ is found through Python.
here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
build_dir="${BUILD_DIR:-$PWD/build}"
model_store="${MODEL_STORE:-$PWD/model_store}"
version="${VERSION:-1.0}"
archiver="${ARCHIVER:-$(command -v torch-model-archiver || echo "$here/.venv/bin/torch-model-archiver")}"
workflow_archiver="${WORKFLOW_ARCHIVER:-$(dirname "$archiver")/torch-workflow-archiver}"
python="$(dirname "$archiver")/python"
[ -x "$python" ] || python="$(command -v python3)"

die() { echo "archive.sh: $*" >&2; exit 1; }

[ -x "$archiver" ] || die "torch-model-archiver not found (run 'make setup' or set ARCHIVER)"
if [ -d "$here/handlers" ]; then
  handlers="$here/handlers"
else
  handlers="$("$python" -c 'import handlers, pathlib; print(pathlib.Path(handlers.__file__).parent)')" || \
    die "the handlers package is not importable by $python (install servekit into the archiver's environment)"
fi

if [ "$#" -gt 0 ]; then
  model_dirs=("$@")
else
  shopt -s nullglob
  model_dirs=()
  for config in "$build_dir"/*/model-config.yaml; do model_dirs+=("$(dirname "$config")"); done
  # Workflows last: registering one needs its member .mar files in the store.
  for spec in "$build_dir"/*/workflow.yaml; do model_dirs+=("$(dirname "$spec")"); done
  [ "${#model_dirs[@]}" -gt 0 ] || die "no model directories with model-config.yaml under $build_dir (run 'servekit export' first)"
fi

# The handlers package travels inside every archive; stage it without caches.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src" "$stage/tmp" "$model_store"
# torch-model-archiver packs in $TMPDIR/<model name>: two archive runs of one model name on a machine (two users,
# two test sessions) wrote into and deleted the same folder. Ours is private.
export TMPDIR="$stage/tmp"
cp -R "$handlers" "$stage/src/handlers"
find "$stage/src" -name '__pycache__' -type d -prune -exec rm -rf {} +

archive_one() {  # model_dir artifact archive_name
  local model_dir="$1" artifact="$2" name="$3" extra="$stage/src"
  if [ -f "$model_dir/tokenizer.json" ]; then  # text in: the tokenizer travels beside the handlers
    extra="$stage/text_$name"
    rm -rf "$extra" && cp -R "$stage/src" "$extra" && cp "$model_dir/tokenizer.json" "$extra/tokenizer.json"
  fi
  "$archiver" \
    --model-name "$name" \
    --version "$version" \
    --serialized-file "$model_dir/$artifact" \
    --handler "$handlers/handler.py" \
    --extra-files "$extra" \
    --config-file "$model_dir/model-config.yaml" \
    --export-path "$model_store" \
    --force
  echo "archived $model_store/$name.mar ($(du -h "$model_store/$name.mar" | cut -f1))"
}

verify_voucher() {  # model_dir: validation.json must vouch (sha256) for exactly the artifacts in it
  "$python" - "$1" <<'PY' || exit 1
import hashlib, json, sys
from pathlib import Path

directory = Path(sys.argv[1])
ARTIFACTS = ("model.pt", "model.onnx", "model.pt2", "model-config.yaml", "tokenizer.json")  # servekit.build.model_dir.ARTIFACT_FILES
fix = "re-run 'servekit export' (or 'servekit variants') to rebuild and re-validate it"

def refuse(why):
    sys.exit(f"archive.sh: {directory}: {why}; {fix}")

try:
    vouched = json.loads((directory / "validation.json").read_text())["artifacts"]
except FileNotFoundError:
    refuse("validation.json is missing, so nothing vouches for its artifacts")
except (ValueError, KeyError, TypeError):
    refuse("validation.json holds no 'artifacts' hashes (written by an older servekit, or damaged)")
present = {name for name in ARTIFACTS if (directory / name).exists()}
if present != set(vouched):
    refuse(f"validation.json vouches for {sorted(vouched)} but the folder holds {sorted(present)}")
for name in sorted(present):
    if hashlib.sha256((directory / name).read_bytes()).hexdigest() != vouched[name]:
        refuse(f"{name} changed after validation (its sha256 is not the one validation.json vouches for)")
PY
}

archive_composed() {  # model_dir: members/ travel as extra files; no single serialized model
  local model_dir="$1" name
  name="$(basename "$model_dir")"
  local extra="$stage/composed_$name"
  rm -rf "$extra" && cp -R "$stage/src" "$extra" && cp -R "$model_dir/members" "$extra/members"
  "$archiver" \
    --model-name "$name" \
    --version "$version" \
    --handler "$handlers/handler.py" \
    --extra-files "$extra" \
    --config-file "$model_dir/model-config.yaml" \
    --export-path "$model_store" \
    --force
  echo "archived $model_store/$name.mar ($(du -h "$model_store/$name.mar" | cut -f1))"
}

archive_workflow() {  # model_dir holding workflow.yaml and composition.yaml
  local model_dir="$1" name
  name="$(basename "$model_dir")"
  [ -x "$workflow_archiver" ] || die "torch-workflow-archiver not found (run 'make setup' or set WORKFLOW_ARCHIVER)"
  [ -f "$model_dir/composition.yaml" ] || die "$model_dir/composition.yaml is missing (run 'servekit composition')"
  "$workflow_archiver" \
    --workflow-name "$name" \
    --spec-file "$model_dir/workflow.yaml" \
    --handler "$handlers/workflow_nodes.py" \
    --extra-files "$model_dir/composition.yaml" \
    --export-path "$model_store" \
    -f
  # The archiver copies extra files flat (no directories), but the nodes import the handlers
  # package: add it to the .war (a zip) ourselves, with the same layout as in every .mar.
  "$python" - "$model_store/$name.war" "$stage/src" <<'PY'
import sys, zipfile
from pathlib import Path
war, root = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(war, "a", zipfile.ZIP_DEFLATED) as archive:
    for path in sorted((root / "handlers").rglob("*.py")):
        archive.write(path, path.relative_to(root).as_posix())
PY
  echo "archived $model_store/$name.war ($(du -h "$model_store/$name.war" | cut -f1))"
}

for model_dir in "${model_dirs[@]}"; do
  model_dir="${model_dir%/}"
  [ -d "$model_dir" ] || die "model directory $model_dir does not exist"
  if [ -f "$model_dir/workflow.yaml" ]; then archive_workflow "$model_dir"; continue; fi
  [ -f "$model_dir/model-config.yaml" ] || die "$model_dir/model-config.yaml is missing (run 'servekit export')"
  if [ -d "$model_dir/members" ]; then archive_composed "$model_dir"; continue; fi
  base="$(basename "$model_dir")"
  [ -f "$model_dir/model.pt" ] || [ -f "$model_dir/model.onnx" ] || [ -f "$model_dir/model.pt2" ] || \
    die "$model_dir has none of model.pt, model.onnx, model.pt2 (run 'servekit export')"
  verify_voucher "$model_dir"
  if [ -f "$model_dir/model.pt" ]; then archive_one "$model_dir" model.pt "${base}_ts"; fi
  if [ -f "$model_dir/model.onnx" ]; then archive_one "$model_dir" model.onnx "${base}_onnx"; fi
  if [ -f "$model_dir/model.pt2" ]; then archive_one "$model_dir" model.pt2 "${base}_aoti"; fi
done
