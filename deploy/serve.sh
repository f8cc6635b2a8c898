#!/usr/bin/env bash
# The container's command: TorchServe in the foreground, serving every archive in the model store.
# Writes only under TMPDIR (temp files, extracted archives, logs), so the root filesystem can be
# read-only. Env: MODEL_STORE, SERVE_CONFIG, TMPDIR (defaults below, as laid out by the Dockerfile).
set -euo pipefail

model_store="${MODEL_STORE:-/home/model-server/model_store}"
config="${SERVE_CONFIG:-/home/model-server/config.properties}"
tmp="${TMPDIR:-/tmp}"

die() { echo "serve.sh: $*" >&2; exit 1; }

[ -f "$config" ] || die "no TorchServe config at $config"
compgen -G "$model_store/*.mar" >/dev/null || die "no .mar archives in $model_store (build them with ./archive.sh before the image)"

mkdir -p "$tmp/logs"
# TEMP moves the JVM's temp dir (archives are unpacked there); LOG_LOCATION/METRICS_LOCATION move
# the log files, which otherwise land in the working directory.
export TEMP="$tmp" LOG_LOCATION="$tmp/logs" METRICS_LOCATION="$tmp/logs" PYTHONDONTWRITEBYTECODE=1
# --ncs: no config snapshots; the image is the configuration.
exec torchserve --start --foreground --ncs --model-store "$model_store" --ts-config "$config"
