#!/usr/bin/env bash
# Creates a TPU VM or pod slice for emojax.
#
# Usage:
#   TPU_NAME=emojax TPU_ZONE=us-east5-a TPU_TYPE=v5p-64 tpu/create.sh [--spot]
#
# v5e: TPU_TYPE=v5litepod-8 (8 chips, 1 host, 16 GiB HBM each); v5p: v5p-8 (4 chips) up to
# v5p-64 (32 chips, 8 hosts, 95 GiB each); v6e: v6e-8 (8 chips, 32 GiB each). Check quota and
# zones with `gcloud compute tpus accelerator-types list --zone=$TPU_ZONE`.
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

extra=()
for arg in "$@"; do
  case "$arg" in
    --spot) extra+=(--spot) ;;
    *)
      echo "unknown argument $arg (supported: --spot)" >&2
      exit 2
      ;;
  esac
done

version="${TPU_VERSION:-$(tpu_runtime_version "$TPU_TYPE")}"
echo "creating $TPU_NAME: $TPU_TYPE ($version) in $TPU_ZONE"
tpu_vm create --accelerator-type "$TPU_TYPE" --version "$version" "${extra[@]}"
tpu_vm describe --format="value(state,acceleratorType,networkEndpoints.len())"
echo "next: tpu/setup.sh"
