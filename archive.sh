#!/usr/bin/env bash
# Build one self-contained .mar per model and format into the model store.
#
#   ./archive.sh                      # every model under build/ (as written by `servekit export`)
#   ./archive.sh build/digits_mlp     # just these model directories
#
# A model directory holds model-config.yaml plus model.pt (TorchScript) and/or model.onnx.
# Archives are named <dir>_ts.mar and <dir>_onnx.mar. Re-running overwrites them (idempotent).
# Env: BUILD_DIR (build), MODEL_STORE (model_store), VERSION (1.0), ARCHIVER (torch-model-archiver).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="${BUILD_DIR:-$here/build}"
model_store="${MODEL_STORE:-$here/model_store}"
version="${VERSION:-1.0}"
archiver="${ARCHIVER:-$(command -v torch-model-archiver || echo "$here/.venv/bin/torch-model-archiver")}"

die() { echo "archive.sh: $*" >&2; exit 1; }

[ -x "$archiver" ] || die "torch-model-archiver not found (run 'make setup' or set ARCHIVER)"

if [ "$#" -gt 0 ]; then
  model_dirs=("$@")
else
  shopt -s nullglob
  model_dirs=()
  for config in "$build_dir"/*/model-config.yaml; do model_dirs+=("$(dirname "$config")"); done
  [ "${#model_dirs[@]}" -gt 0 ] || die "no model directories with model-config.yaml under $build_dir (run 'servekit export' first)"
fi

# The handlers package travels inside every archive; stage it without caches.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src" "$model_store"
cp -R "$here/handlers" "$stage/src/handlers"
find "$stage/src" -name '__pycache__' -type d -prune -exec rm -rf {} +

archive_one() {  # model_dir artifact archive_name
  local model_dir="$1" artifact="$2" name="$3"
  "$archiver" \
    --model-name "$name" \
    --version "$version" \
    --serialized-file "$model_dir/$artifact" \
    --handler "$here/handlers/classifier_handler.py" \
    --extra-files "$stage/src" \
    --config-file "$model_dir/model-config.yaml" \
    --export-path "$model_store" \
    --force
  echo "archived $model_store/$name.mar ($(du -h "$model_store/$name.mar" | cut -f1))"
}

for model_dir in "${model_dirs[@]}"; do
  model_dir="${model_dir%/}"
  [ -d "$model_dir" ] || die "model directory $model_dir does not exist"
  [ -f "$model_dir/model-config.yaml" ] || die "$model_dir/model-config.yaml is missing (run 'servekit export')"
  base="$(basename "$model_dir")"
  found=0
  if [ -f "$model_dir/model.pt" ]; then archive_one "$model_dir" model.pt "${base}_ts"; found=1; fi
  if [ -f "$model_dir/model.onnx" ]; then archive_one "$model_dir" model.onnx "${base}_onnx"; found=1; fi
  [ "$found" -eq 1 ] || die "$model_dir has neither model.pt nor model.onnx (run 'servekit export')"
done
