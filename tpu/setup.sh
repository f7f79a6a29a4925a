#!/usr/bin/env bash
# Installs emojax (this checkout) and JAX for TPU on every worker of the slice.
#
# Usage:
#   tpu/setup.sh                     # copy the working tree, make a venv, pip install
#   MODELS="meta-llama/Llama-3.1-70B meta-llama/Llama-3.1-70B-Instruct" tpu/setup.sh
#
# With MODELS set, each worker also downloads those checkpoints into its Hugging Face cache.
# Gated models need a token on every worker first:
#   gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$TPU_ZONE" --worker=all \
#     --command 'emojax/.venv/bin/hf auth login --token <your token>'
# Disk: Llama-3.1-70B in bf16 is ~141 GB per worker; attach a larger data disk, or a
# read-only persistent disk that already holds the weights, and pass its path as the model.
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="$(mktemp -t emojax.XXXXXX.tar.gz)"
trap 'rm -f "$archive"' EXIT

# The tracked and untracked-but-not-ignored files: what `git status` would commit.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
  tar --null -czf "$archive" -T -)
echo "copying $(du -h "$archive" | cut -f1) to every worker of $TPU_NAME"
tpu_vm scp "$archive" "$TPU_NAME:emojax.tar.gz" --worker=all

read -r -d '' install <<SCRIPT || true
set -euo pipefail
mkdir -p ~/$REMOTE_DIR && tar -xzf ~/emojax.tar.gz -C ~/$REMOTE_DIR
cd ~/$REMOTE_DIR
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "jax[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
.venv/bin/pip install -q -e .
.venv/bin/python -c "import jax; print(jax.process_index(), jax.local_device_count(), 'local of', jax.device_count())"
SCRIPT
on_all_workers "$install"

if [[ -n "${MODELS:-}" ]]; then
  on_all_workers "cd ~/$REMOTE_DIR && for m in $MODELS; do .venv/bin/hf download \"\$m\" --exclude 'original/*'; done"
fi
echo "next: tpu/launch.sh scripts/plan.py --config=configs/<family>.py"
