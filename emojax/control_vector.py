"""llama.cpp control vectors (GGUF files of `direction.k` tensors) in and out of emojax.

Dimension legend: L decoder layers, D model width.

A control vector file (written by repeng's `ControlVector.export_gguf`, llama.cpp's
`llama-cvector-generator`, or `VectorSet.export_control_vector`) is a GGUF file with
`general.architecture = controlvector`, `controlvector.model_hint` (the model architecture),
`controlvector.layer_count` (the number of directions; llama.cpp reads neither key) and one
float32 1-D tensor `direction.k` [D] per steered block. llama.cpp adds `scale * direction.k`
to every token's residual stream, with no normalisation.

The layer mapping (the only place emojax states it)
-----------------------------------------------------
llama.cpp (ggml-org/llama.cpp, read for this module):

* `common_control_vector_load_one` (common/common.cpp) rejects `direction.0` and any
  non-F32 or non-1-D tensor, and stores `direction.k` at offset `n_embd * (k - 1)`;
* `llama_adapter_cvec::apply` (src/llama-adapter.cpp) fills `tensors[il]` from offset
  `n_embd * (il - 1)` for `il = 1 .. n_layer - 1` (`tensors[0]` is always null), so
  `tensors[k]` holds `direction.k`;
* `build_cvec(cur, il)` (src/llama-graph.cpp, called in src/models/llama.cpp right after the
  feed-forward residual add, before `cb(cur, "l_out", il)`) adds `tensors[il]` to the output
  of decoder block `il` (blocks counted from 0).

So `direction.k` is added to the output of block k, which is the input of block k + 1:
emojax's `resid[k + 1]` (a PyTorch forward-pre-hook on `model.layers[k + 1]`, or a forward
hook on `model.layers[k]`). emojax site `l` is `direction.(l - 1)`, for `2 <= l <= L`:
`resid[0]` and `resid[1]` (embeddings, block 0's output) cannot be steered by llama.cpp, and
site L (the last block's output, read only by the final norm) has a direction but no emojax
`Intervention` (which acts on layer inputs `resid[0..L-1]`). `site_to_direction` and
`direction_to_site` below are that mapping; nothing else in emojax computes it.

Units: what emojax writes is the vector llama.cpp adds at scale 1: `coef * layer_norms[l] *
unit direction`, `coef` in units of the site's median residual norm on neutral text (the
`VectorSet` convention); `emojax.coef`, `emojax.unit` and `emojax.sites` in the metadata say so.

In: `load_intervention(config, path, scale)` reads a file as an `Intervention` (the model core
knows nothing of llama.cpp). Out: `write_control_vector`, which
`VectorSet.export_control_vector` calls with a concept's steering vectors.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from emojax import validate
from emojax.config import ModelConfig
from emojax.gguf import GGUFError, open_reader, read_metadata
from emojax.interventions import Intervention

ARCH = "controlvector"
UNIT = (
    "tensor = coef * layer_norms[site] * unit direction: coef in units of the site's median "
    "residual-stream norm on neutral text (emojax VectorSet convention); llama.cpp adds "
    "scale * tensor"
)


def site_to_direction(site: int, num_layers: int) -> int:
    """llama.cpp `direction.k` index of emojax residual site `site` (`resid[site]`).

    Args:
      site: emojax residual site, 2 <= site <= num_layers.
      num_layers: L, the model's decoder layers.

    Raises:
      ValueError: a site llama.cpp cannot steer (0, 1) or beyond the model.
    """
    if not 2 <= site <= num_layers:
        raise ValueError(
            f"emojax site {site} has no llama.cpp control-vector direction: direction.k is added "
            f"to the output of block k >= 1, i.e. resid[k + 1], so sites 2..{num_layers} "
            "are exportable (resid[0] is the embedding, resid[1] block 0's output)"
        )
    return site - 1


def direction_to_site(k: int, num_layers: int) -> int:
    """emojax residual site of llama.cpp's `direction.k` (the inverse of `site_to_direction`).

    Raises:
      ValueError: k = 0 (llama.cpp rejects it) or k beyond the model's last block.
    """
    if k == 0:
        raise ValueError(
            "direction.0 is invalid: llama.cpp rejects it (block 0's output cannot be steered)"
        )
    if not 1 <= k <= num_layers - 1:
        raise ValueError(f"direction.{k} is beyond the last block of a {num_layers}-layer model")
    return k + 1


@dataclasses.dataclass
class ControlVector:
    """The contents of a control-vector file.

    Attributes:
      directions: llama.cpp index k -> float32 [D], what llama.cpp adds to block k's output
        at scale 1.
      model_hint: `controlvector.model_hint` ("" when absent).
      metadata: every other metadata key (e.g. emojax's `emojax.*`).
    """

    directions: dict[int, np.ndarray]
    model_hint: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return next(iter(self.directions.values())).shape[0]

    def sites(self, num_layers: int) -> dict[int, np.ndarray]:
        """emojax site -> vector, for a model with `num_layers` decoder layers."""
        return {direction_to_site(k, num_layers): v for k, v in sorted(self.directions.items())}


def write_control_vector(
    path: str,
    directions: dict[int, np.ndarray],
    *,
    model_hint: str,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Writes a llama.cpp / repeng control-vector GGUF file.

    Args:
      path: the `.gguf` file to write (parent directories are created).
      directions: llama.cpp index k >= 1 -> [D] vector (written as float32).
      model_hint: the model's architecture (`controlvector.model_hint`, e.g. "llama").
      metadata: extra keys (str, int, float, bool or lists of str/int).

    Returns:
      The path written.
    """
    import gguf

    if not directions:
        raise ValueError("a control vector needs at least one direction")
    widths = {np.shape(v) for v in directions.values()}
    if len(widths) != 1 or len(next(iter(widths))) != 1:
        raise ValueError(f"directions must be 1-D of one width, got shapes {sorted(widths)}")
    for k in directions:
        if int(k) < 1:
            raise ValueError(f"direction.{k} is invalid: llama.cpp reads direction.k for k >= 1")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint)
    writer.add_uint32(f"{ARCH}.layer_count", len(directions))
    for key, value in (metadata or {}).items():
        _add_value(writer, key, value)
    for k in sorted(directions):
        writer.add_tensor(f"direction.{int(k)}", np.ascontiguousarray(directions[k], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_value(writer, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int | np.integer):
        writer.add_int32(key, int(value))
    elif isinstance(value, float | np.floating):
        writer.add_float32(key, float(value))
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list | tuple):
        writer.add_array(key, [v if isinstance(v, str) else int(v) for v in value])
    else:
        raise TypeError(f"metadata {key!r}: unsupported value type {type(value).__name__}")


def read_control_vector(path: str) -> ControlVector:
    """Reads a control-vector file, checked as llama.cpp checks it.

    Raises:
      ValueError: a model file instead of a control vector, `direction.0`, a tensor name that
        is not `direction.<int>`, a non-F32 or non-1-D tensor, or directions of unequal width.
    """
    import gguf

    try:
        reader = open_reader(path)
    except GGUFError as e:
        raise ValueError(str(e)) from None
    meta = read_metadata(reader)
    arch = meta.pop("general.architecture", ARCH)
    if arch != ARCH:
        raise ValueError(
            f"{path} is a {arch!r} GGUF file, not a control vector "
            f"(general.architecture = {ARCH!r})"
        )
    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        prefix, _, index = t.name.partition(".")
        if prefix != "direction" or not index.lstrip("-").isdigit():
            raise ValueError(f"{path}: tensor {t.name!r} is not named direction.<layer>")
        k = int(index)
        if k <= 0:
            raise ValueError(
                f"{path}: direction.{k} is invalid (llama.cpp rejects it: block 0's output "
                "cannot be steered, indices start at 1)"
            )
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{path}: {t.name} is {t.tensor_type.name}; llama.cpp needs F32")
        if len(t.shape) != 1:
            raise ValueError(f"{path}: {t.name} has shape {list(t.shape)}; llama.cpp needs 1-D")
        v = np.array(t.data, np.float32).reshape(-1)
        directions[k] = directions[k] + v if k in directions else v  # llama.cpp sums repeats
    if not directions:
        raise ValueError(f"{path} holds no direction tensors")
    if len({v.shape for v in directions.values()}) != 1:
        raise ValueError(f"{path}: direction tensors have different widths")
    hint = meta.pop(f"{ARCH}.model_hint", "")
    return ControlVector(directions=directions, model_hint=hint, metadata=meta)


def to_intervention(
    config: ModelConfig, cv: ControlVector, scale: float = 1.0, *, final: str = "error"
) -> Intervention:
    """The emojax `Intervention` that adds what llama.cpp adds with `--control-vector-scaled`.

    Args:
      config: the model config.
      cv: the control vector.
      scale: llama.cpp's scale (strength multiplier).
      final: what to do with `direction.(L - 1)` (the last block's output, which no emojax
        Intervention reaches): "error" (default) or "drop" (ignore it, with a warning).

    Returns:
      An Intervention adding `scale * direction.k` at `resid[k + 1]` at every position,
      including generated tokens.

    Raises:
      ValueError: width mismatch, a direction beyond the model, or direction.(L - 1) with
        final="error".
    """
    if final not in ("error", "drop"):
        raise ValueError(f"final must be 'error' or 'drop', not {final!r}")
    if cv.d_model != config.d_model:
        raise ValueError(
            f"control vector width {cv.d_model} != model d_model {config.d_model}"
            + (f" (model_hint {cv.model_hint!r})" if cv.model_hint else "")
        )
    if cv.model_hint and cv.model_hint != config.model_type:
        warnings.warn(
            f"control vector model_hint {cv.model_hint!r} differs from model type "
            f"{config.model_type!r}",
            stacklevel=2,
        )
    num = config.num_layers
    vectors = np.zeros((num, config.d_model), np.float32)
    for site, v in cv.sites(num).items():
        if site == num:
            if final == "error":
                raise ValueError(
                    f"direction.{num - 1} steers the output of the last block (resid[{num}]), "
                    "which emojax Interventions (acting on layer inputs) cannot reach; pass "
                    "final='drop' to ignore it"
                )
            warnings.warn(f"dropped direction.{num - 1} (the last block's output)", stacklevel=2)
            continue
        vectors[site] += np.float32(scale) * v
    return Intervention.none(config).replace(
        add_vectors=jnp.asarray(vectors)[None],
        add_masks=jnp.ones((1, 1, 1)),
        add_on_new=jnp.ones((1,)),
    )


def load_intervention(
    config: ModelConfig, path: str, scale: float = 1.0, *, final: str = "error"
) -> Intervention:
    """Reads a llama.cpp / repeng control-vector file as an emojax `Intervention`.

    `direction.k` is added, times `scale`, to `resid[k + 1]` at every position (the mapping
    and its source are in the module docstring): `read_control_vector` then
    `to_intervention`.

    Args:
      config: the model config.
      path: the control-vector `.gguf` file.
      scale: strength multiplier (llama.cpp's `--control-vector-scaled FILE:SCALE`).
      final: "error" or "drop" for `direction.(L-1)`, the last block's output, which
        no Intervention reaches.

    Returns:
      The intervention.

    Raises:
      ValueError: a file llama.cpp would reject, a width or direction that does not fit the
        model, or a non-finite `scale` or tensor value (naming it).
    """
    validate.check_finite(scale, "scale")
    iv = to_intervention(config, read_control_vector(path), scale, final=final)
    validate.check_finite(iv.add_vectors, f"control vector {path}", what="(entry, layer, d)")
    return iv
