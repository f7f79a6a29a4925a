"""The safetensors files of a checkpoint directory: which files, their headers, their tensors.

A single `model.safetensors` or shards listed in `model.safetensors.index.json`; an unreadable
index, a missing shard and a corrupt or truncated file are `CheckpointError`s naming the file.
This module knows no model family: which tensor goes where is `emojax.checkpoint`'s job
(whose `CheckpointError` this module raises).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from safetensors import SafetensorError, safe_open

from emojax.checkpoint import CheckpointError


def checkpoint_files(path: str) -> list[str]:
    """The safetensors files of a checkpoint directory (single or sharded with an index)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(
                f"{index} is not a safetensors index (a JSON object with a 'weight_map' of "
                f"tensor name -> file): {type(e).__name__}: {e}"
            ) from None
        for name in files:
            if not os.path.isfile(os.path.join(path, name)):
                raise CheckpointError(f"shard {name} listed in {index} does not exist")
        return [os.path.join(path, n) for n in files]
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    raise CheckpointError(
        f"no model.safetensors or model.safetensors.index.json in {path} "
        "(emojax reads safetensors only; convert .bin checkpoints with transformers first)"
    )


def open_safetensors(file: str, framework: str = "flax"):
    """`safe_open(file)`, with a corrupt or truncated file reported as such, by name.

    Raises:
      CheckpointError: naming the file (the header is unreadable, or the file is shorter than
        its tensors need).
    """
    try:
        return safe_open(file, framework=framework)
    except SafetensorError as e:
        size = os.path.getsize(file)
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({size} bytes; {e}): the file is "
            "corrupt or truncated, re-download or re-save it"
        ) from None


def iter_tensors(path: str) -> Iterator[tuple[str, Any]]:
    """Yields (name, array) for every tensor of a checkpoint, one at a time."""
    for file in checkpoint_files(path):
        with open_safetensors(file) as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, f.get_tensor(name)


def tensor_headers(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype) of every tensor of a checkpoint directory.

    Read from the files' headers alone: no weight is read, so this takes milliseconds for a
    70B checkpoint. safetensors checks that each file is as long as its header says.

    Raises:
      CheckpointError: no weights, a missing shard, an unreadable index, or a corrupt or
        truncated file (each named).
    """
    out = {}
    for file in checkpoint_files(path):
        with open_safetensors(file, "numpy") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                sl = f.get_slice(name)
                out[name] = (tuple(int(x) for x in sl.get_shape()), str(sl.get_dtype()))
    return out
