"""`VectorSet`: concept directions for every layer with their metadata, saved and exported.

A set holds unit directions `vectors [C, L, D]` for the L = num_layers + 1 residual sites:
`vectors[c, l]` belongs to `resid[l]`, the input of decoder layer `l` (a PyTorch
forward-pre-hook on `model.layers[l]`; `resid[0]` is the embedding output), and the last site
is the output of the last layer (a forward hook on `model.layers[-1]`). It also holds the
per-site median residual norm on neutral text `layer_norms [L]` (the steering unit: a
coefficient `a` means adding `a * layer_norms[l] * vectors[c, l]`) and `scales [C, L]`, the
length of the concept's mean difference along each direction (residual-stream units).
`intervention(config, concept, layer, coef)` turns one direction into an `emojax.Intervention`
in those units (`Intervention.add` takes raw vectors).

Storage: `save`/`load` write an orbax checkpoint of the arrays plus `metadata.json`;
`export_safetensors`/`load_safetensors` write `<name>.safetensors` (tensors `vectors`,
`scales`, `layer_norms`) plus `<name>.json` (concept names, method, layer convention, metadata)
that PyTorch steering tools can read without JAX; `export_control_vector` writes a llama.cpp
control vector (`emojax.control_vector`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from emojax import control_vector, results, validate
from emojax.config import ModelConfig
from emojax.interventions import Intervention

LAYER_CONVENTION = (
    "vectors[c, l] belongs to the residual stream entering decoder layer l (a forward-pre-hook "
    "on model.layers[l]); l = 0 is the embedding output and the last index (num_layers) the "
    "output of the last decoder layer (a forward hook on model.layers[-1]). Steering with "
    "coefficient a adds a * layer_norms[l] * vectors[c, l]."
)


@dataclasses.dataclass
class VectorSet:
    """Concept directions of one model and method.

    Attributes:
      vectors: [C, L, D] float32 unit directions.
      scales: [C, L] float32 mean-difference length along each direction.
      layer_norms: [L] float32 median residual norm on neutral text per layer.
      concepts: C concept names.
      method: "diff_of_means", "pca", "probe" or "denoised".
      metadata: JSON-serialisable provenance: model, model hash, dataset hash, capture
        positions, chosen layers (e.g. {"selected_layer": {"refusal": 3}}), counts.
    """

    vectors: np.ndarray
    scales: np.ndarray
    layer_norms: np.ndarray
    concepts: tuple[str, ...]
    method: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.vectors = np.asarray(self.vectors, np.float32)
        self.scales = np.asarray(self.scales, np.float32)
        self.layer_norms = np.asarray(self.layer_norms, np.float32)
        self.concepts = tuple(self.concepts)
        c, nl, _ = self.vectors.shape
        if self.scales.shape != (c, nl) or self.layer_norms.shape != (nl,):
            raise ValueError("scales must be [C, L] and layer_norms [L] for vectors [C, L, D]")
        if len(self.concepts) != c:
            raise ValueError(f"{len(self.concepts)} concept names for {c} vectors")

    @property
    def num_layers(self) -> int:
        return self.vectors.shape[1]

    def index(self, concept: str) -> int:
        """Row of `concept`."""
        return self.concepts.index(concept)

    def steering_vector(self, concept: str, layer: int, coef: float = 1.0) -> np.ndarray:
        """[D] `coef * layer_norms[layer] * unit direction` (coef in norm units)."""
        return coef * self.layer_norms[layer] * self.vectors[self.index(concept), layer]

    def intervention(
        self,
        config: ModelConfig,
        concept: str,
        layer: int,
        coef: float | jnp.ndarray,
        *,
        unit: str = "median_norm",
        positions: jnp.ndarray | None = None,
    ) -> Intervention:
        """Additive steering along `concept` at `resid[layer]`, as an `emojax.Intervention`.

        Units: with `unit="median_norm"` (the default, and the unit of sweeps, reports and
        `export_control_vector`) `coef` counts the layer's median residual-stream norm on
        neutral text, so it adds `coef * layer_norms[layer] * vectors[c, layer]` (=
        `steering_vector(concept, layer, coef)`): coef 1 is a step as long as a typical
        residual. With `unit="raw"`, `coef` is in residual-stream units along the unit
        direction: it adds `coef * vectors[c, layer]`. (`Intervention.add` takes the vector
        as given, in raw units.)

        Args:
          config: the model's config (the set must hold its L + 1 sites).
          concept: one of `concepts`.
          layer: the decoder layer whose input is steered, in [-L, L) (site L, the last
            layer's output, is read by no layer and cannot be steered).
          coef: the strength, in `unit`s (may be traced: one program for every coef).
          unit: "median_norm" or "raw".
          positions: [B, T] prompt positions to steer; None steers every position, including
            the tokens `generate` produces (as `Intervention.add`).

        Returns:
          The intervention.

        Raises:
          ValueError: an unknown unit or concept, or a set of another model's shape.
          IndexError / TypeError: `layer` out of range or not an integer.
        """
        if unit not in ("median_norm", "raw"):
            raise ValueError(f"unit must be 'median_norm' or 'raw', not {unit!r}")
        num = config.num_layers
        if self.vectors.shape[1:] != (num + 1, config.d_model):
            raise ValueError(
                f"the vector set has {self.vectors.shape[1]} sites of width "
                f"{self.vectors.shape[2]}; a model with {num} layers and d_model "
                f"{config.d_model} needs {num + 1} sites of width {config.d_model}"
            )
        if concept not in self.concepts:
            raise ValueError(f"concept {concept!r} is not in the set {list(self.concepts)}")
        site = validate.check_layer(layer, num)
        vector = self.vectors[self.index(concept), site]
        if unit == "median_norm":
            vector = self.layer_norms[site] * vector
        return Intervention.add(config, site, vector, coef, positions=positions)

    def subset(self, concepts: Sequence[str]) -> VectorSet:
        """The set restricted to `concepts` (in that order)."""
        idx = [self.index(c) for c in concepts]
        return dataclasses.replace(
            self, vectors=self.vectors[idx], scales=self.scales[idx], concepts=tuple(concepts)
        )

    def _header(self) -> dict[str, Any]:
        return {
            "concepts": list(self.concepts),
            "method": self.method,
            "shape": list(self.vectors.shape),
            "layer_convention": LAYER_CONVENTION,
            "metadata": self.metadata,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors, "scales": self.scales, "layer_norms": self.layer_norms}

    def save(self, path: str) -> None:
        """Writes an orbax checkpoint of the arrays (`path/arrays`) and `path/metadata.json`."""
        import orbax.checkpoint as ocp

        path = os.path.abspath(path)
        os.makedirs(path, exist_ok=True)
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(os.path.join(path, "arrays"), self._arrays(), force=True)
        results.write_text(
            os.path.join(path, "metadata.json"), json.dumps(self._header(), indent=2)
        )

    @classmethod
    def load(cls, path: str) -> VectorSet:
        """Reads a set written by `save`."""
        import orbax.checkpoint as ocp

        path = os.path.abspath(path)
        with open(os.path.join(path, "metadata.json")) as f:
            header = json.load(f)
        with ocp.StandardCheckpointer() as ckpt:
            arrays = ckpt.restore(os.path.join(path, "arrays"))
        return cls._from(header, {k: np.asarray(v) for k, v in arrays.items()})

    def export_safetensors(self, path: str) -> tuple[str, str]:
        """Writes `path.safetensors` and `path.json` (path without extension); returns both."""
        from safetensors.numpy import save

        base = path.removesuffix(".safetensors")
        header = self._header()
        data = save(
            {k: np.ascontiguousarray(v) for k, v in self._arrays().items()},
            metadata={"emojax": json.dumps(header)},
        )
        results.write_bytes(base + ".safetensors", data)  # atomic, like every run output
        results.write_text(base + ".json", json.dumps(header, indent=2))
        return base + ".safetensors", base + ".json"

    def export_control_vector(
        self,
        concept: str,
        path: str,
        *,
        layers: int | Sequence[int] | None = None,
        coef: float = 1.0,
        model_hint: str | None = None,
    ) -> str:
        """Writes `concept` as a llama.cpp / repeng control-vector GGUF file; returns its path.

        Site `l` (2 <= l <= num_layers) becomes `direction.(l-1)` holding
        `steering_vector(concept, l, coef)`; see `emojax.control_vector`.

        Args:
          concept: the concept to export.
          path: the `.gguf` file to write.
          layers: emojax site(s) to steer (2 <= l <= L); None = the concept's selected layer
            (`metadata["selected_layer"][concept]`).
          coef: strength in units of each site's median residual norm (`steering_vector`).
          model_hint: `controlvector.model_hint`; None = `metadata["model_type"]`, else
            "llama".

        Raises:
          ValueError: no layers given and none selected, or a site llama.cpp cannot steer.
        """
        num_layers = self.num_layers - 1  # a set holds L + 1 sites
        if layers is None:
            selected = (self.metadata.get("selected_layer") or {}).get(concept)
            if selected is None:
                raise ValueError(
                    f"no selected layer for {concept!r} in the set's metadata; pass layers="
                )
            layers = [int(selected)]
        sites = [int(layers)] if np.ndim(layers) == 0 else [int(x) for x in layers]
        directions = {
            control_vector.site_to_direction(s, num_layers): self.steering_vector(concept, s, coef)
            for s in sites
        }
        meta = {
            "emojax.concept": concept,
            "emojax.method": self.method,
            "emojax.coef": float(coef),
            "emojax.unit": control_vector.UNIT,
            "emojax.sites": sorted(sites),
            "emojax.model": str(self.metadata.get("model", "")),
            "emojax.layer_convention": "direction.k is added to the output of block k = emojax "
            "resid[k + 1] (a forward-pre-hook on model.layers[k + 1])",
        }
        hint = model_hint or str(self.metadata.get("model_type") or "llama")
        return control_vector.write_control_vector(path, directions, model_hint=hint, metadata=meta)

    @classmethod
    def load_safetensors(cls, path: str) -> VectorSet:
        """Reads a set written by `export_safetensors` (path with or without extension)."""
        from safetensors import safe_open

        base = path.removesuffix(".safetensors")
        with safe_open(base + ".safetensors", framework="numpy") as f:
            header = json.loads(f.metadata()["emojax"])
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return cls._from(header, arrays)

    @classmethod
    def _from(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> VectorSet:
        return cls(
            vectors=arrays["vectors"],
            scales=arrays["scales"],
            layer_norms=arrays["layer_norms"],
            concepts=tuple(header["concepts"]),
            method=header["method"],
            metadata=header.get("metadata", {}),
        )


def save_all(sets: dict[str, VectorSet], directory: str, *, export: bool = True) -> None:
    """Saves one set per method under `directory/<method>` (+ `<method>.safetensors/.json`)."""
    for method, vs in sets.items():
        vs.save(os.path.join(directory, method))
        if export:
            vs.export_safetensors(os.path.join(directory, method))


def load_all(directory: str) -> dict[str, VectorSet]:
    """Reads every set written by `save_all`."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if os.path.isfile(os.path.join(directory, name, "metadata.json")):
            out[name] = VectorSet.load(os.path.join(directory, name))
    return out
