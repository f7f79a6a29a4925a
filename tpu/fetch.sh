#!/usr/bin/env bash
# Copies a run's work directory back from worker 0 (the only process that writes results).
#
# Usage:
#   tpu/fetch.sh runs/70b [local_dir]      # default local_dir: ./runs/
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ $# -lt 1 ]]; then
  echo "usage: tpu/fetch.sh <remote workdir, relative to ~/$REMOTE_DIR> [local_dir]" >&2
  exit 2
fi
remote="$1"
local_dir="${2:-runs}"
mkdir -p "$local_dir"
tpu_vm scp --recurse --worker=0 "$TPU_NAME:$REMOTE_DIR/$remote" "$local_dir/"
echo "fetched into $local_dir/$(basename "$remote") (open report.md there)"
