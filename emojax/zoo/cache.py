"""The zoo's cache on disk: its layout, atomic writes, the build lock and completeness checks.

Cache layout (root = --workdir, or ~/.cache/emojax/zoo/<config hash>/; the cache root can be
moved with $EMOJAX_CACHE):

  root/tokenizer/                 tokenizer.json, tokenizer_config.json (chat template)
  root/<model>/                   config.json, model.safetensors, tokenizer files,
                                  zoo_model.json (config hash, training summary)
  root/behaviour.json             greedy-generation behaviour table
  root/zoo.json                   manifest, written last: its presence means "complete"

Every directory is written under a `.tmp-*` name and renamed into place, so a model directory
that exists was written completely; `zoo_model.json` must also carry the current config hash.
An interrupted build leaves `.tmp-*` leftovers (deleted on the next run) and no manifest; the
next run keeps the complete models up to the first missing one and rebuilds from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emojax.zoo.recipe import ZOO_MODELS

MANIFEST = "zoo.json"
BEHAVIOUR = "behaviour.json"
MODEL_MARKER = "zoo_model.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Exclusive lock on root/.lock so two processes never build one zoo at once."""
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _publish(tmp: Path, final: Path) -> None:
    """Renames a fully written directory into place (replacing a stale one)."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def model_is_complete(path: Path, digest: str) -> bool:
    """A model directory written completely by a build of the config with this hash."""
    marker = path / MODEL_MARKER
    if not marker.is_file() or not all((path / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        return json.loads(marker.read_text()).get("config_hash") == digest
    except json.JSONDecodeError:
        return False


def _tokenizer_is_complete(path: Path, digest: str) -> bool:
    try:
        return json.loads((path / "zoo_tokenizer.json").read_text())["config_hash"] == digest
    except (OSError, KeyError, json.JSONDecodeError):
        return False


def zoo_is_complete(root: Path, digest: str) -> bool:
    """The manifest exists for this hash and every model directory is complete."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        manifest.get("config_hash") == digest
        and (root / BEHAVIOUR).is_file()
        and all(model_is_complete(root / m, digest) for m in ZOO_MODELS)
    )


def _remove_leftovers(root: Path) -> list[str]:
    removed = []
    for p in root.glob(".tmp-*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        removed.append(p.name)
    return removed
