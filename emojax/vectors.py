"""`VectorSet`: concept directions for every layer with their metadata, saved and exported.

A set holds unit directions `vectors [C, L, D]` for the L = num_layers + 1 residual sites:
`vectors[c, l]` belongs to `resid[l]`, the input of decoder layer `l` (a PyTorch
forward-pre-hook on `model.layers[l]`; `resid[0]` is the embedding output), and the last site
is the output of the last layer (a forward hook on `model.layers[-1]`). It also holds the
per-site median residual norm on neutral text `layer_norms [L]` (the steering unit: a
coefficient `a` means adding `a * layer_norms[l] * vectors[c, l]`) and `scales [C, L]`, the
length of the concept's mean difference along each direction (residual-stream units).

Storage: `save`/`load` write an orbax checkpoint of the arrays plus `metadata.json`;
`export_safetensors`/`load_safetensors` write `<name>.safetensors` (tensors `vectors`,
`scales`, `layer_norms`) plus `<name>.json` (concept names, method, layer convention, metadata)
that PyTorch steering tools can read without JAX.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from emojax import results

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
        `steering_vector(concept, l, coef)`; see `emojax.control_vector`. `layers=None` exports
        the concept's selected layer (`metadata["selected_layer"]`).
        """
        from emojax.control_vector import export_vector_set

        return export_vector_set(
            self, concept, path, layers=layers, coef=coef, model_hint=model_hint
        )

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
