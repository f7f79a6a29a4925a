#!/usr/bin/env bash
# Runs one emojax script on every worker of the slice (one JAX process per host).
#
# Usage:
#   tpu/launch.sh scripts/breakpoint.py --config=configs/llama31_70b.py --workdir=runs/70b
#   DETACH=1 tpu/launch.sh scripts/sweep.py ...   # keep running after ssh disconnects
#
# Every worker runs the same command with EMOJAX_DISTRIBUTED=1, so the script calls
# jax.distributed.initialize() and builds one mesh over all chips of the slice; only process
# 0 writes results (fetch them with tpu/fetch.sh). Logs: ~/emojax/logs/launch.log per worker.
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ $# -lt 1 ]]; then
  echo "usage: tpu/launch.sh <script.py> [flags...]" >&2
  exit 2
fi

cmd="$(printf '%q ' "$@")"
run="cd ~/$REMOTE_DIR && mkdir -p logs && EMOJAX_DISTRIBUTED=1 .venv/bin/python $cmd"
if [[ "${DETACH:-0}" == "1" ]]; then
  on_all_workers "nohup bash -c $(printf '%q' "$run") > ~/$REMOTE_DIR/logs/launch.log 2>&1 &"
  echo "started on all workers; follow with:"
  echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $TPU_ZONE --worker=0 --command 'tail -f ~/$REMOTE_DIR/logs/launch.log'"
else
  on_all_workers "$run 2>&1 | tee ~/$REMOTE_DIR/logs/launch.log"
fi
