#!/usr/bin/env bash
# Shared settings for the tpu/ scripts (sourced, not run). Override any of them in the
# environment, e.g. `TPU_NAME=emo70b TPU_TYPE=v5p-64 tpu/create.sh`.
set -euo pipefail

TPU_NAME="${TPU_NAME:-emojax}"
TPU_ZONE="${TPU_ZONE:-us-east5-a}"
# Accelerator type: v5litepod-8 (v5e), v5p-8 ... v5p-64 (v5p, 4 chips per host),
# v6e-8 (Trillium). The number is TensorCores for v5p, chips for v5e / v6e.
TPU_TYPE="${TPU_TYPE:-v5p-8}"
TPU_PROJECT="${TPU_PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}"
REMOTE_DIR="${REMOTE_DIR:-emojax}"  # checkout location in each worker's home directory

# TPU VM software image for the accelerator generation.
tpu_runtime_version() {
  case "$1" in
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v4-*) echo "tpu-ubuntu2204-base" ;;
    *)
      echo "unknown TPU_TYPE $1 (expected v5litepod-N, v5p-N or v6e-N)" >&2
      return 1
      ;;
  esac
}

# gcloud compute tpus tpu-vm <verb> with the name, zone and project filled in.
tpu_vm() {
  local verb="$1"
  shift
  local args=("$TPU_NAME" --zone "$TPU_ZONE")
  if [[ -n "$TPU_PROJECT" ]]; then
    args+=(--project "$TPU_PROJECT")
  fi
  gcloud compute tpus tpu-vm "$verb" "${args[@]}" "$@"
}

# Runs a shell command on every worker of the slice at once.
on_all_workers() {
  tpu_vm ssh --worker=all --command "$1"
}
