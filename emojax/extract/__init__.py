"""Concept vectors of one model: all concepts x all layers x all methods from one capture pass.

* `emojax.extract.contrast`: the inputs (`Prompt`, `ContrastSet`, capture sites, the shipped
  datasets through the chat template).
* `emojax.extract.activations`: the batched capture into on-device statistics (`Captured`).
* `emojax.extract.methods`: directions per method from those statistics (`directions`).
* `emojax.extract.refusal`: the refusal layer chosen by its causal effect (Arditi et al.).
* `emojax.extract.extraction`: the whole extraction of one model (`extract_model`) and
  saved-or-extracted vectors (`load_or_extract_vectors`).
* `emojax.extract.run`: the `scripts/extract_vectors.py` run into a work directory; it sits
  above `emojax.pipeline`, so this package does not import it.

Dimension legend: B batch, T time, D model, L residual sites `resid[0..num_layers]`, C
concepts, S sides (0 = positive, 1 = negative), M item slots per concept side, R resamples.
"""

from emojax.extract.activations import (
    DEFAULT_BUCKETS,
    Captured,
    CaptureStats,
    capture,
    capture_features,
)
from emojax.extract.contrast import (
    DEFAULT_POSITIONS,
    POSITIONS,
    ContrastSet,
    Prompt,
    encode_prompt,
    load_contrast_sets,
    load_neutral,
    site_range,
)
from emojax.extract.extraction import (
    Extraction,
    config_kwargs,
    extract_model,
    load_or_extract_vectors,
)
from emojax.extract.methods import (
    METHODS,
    diff_of_means,
    directions,
    neutral_components,
    paired_differences,
    pca_direction,
    probe_direction,
    project_out,
)
from emojax.extract.refusal import RefusalSelection, select_refusal_layer

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_POSITIONS",
    "METHODS",
    "POSITIONS",
    "CaptureStats",
    "Captured",
    "ContrastSet",
    "Extraction",
    "Prompt",
    "RefusalSelection",
    "capture",
    "capture_features",
    "config_kwargs",
    "diff_of_means",
    "directions",
    "encode_prompt",
    "extract_model",
    "load_contrast_sets",
    "load_neutral",
    "load_or_extract_vectors",
    "neutral_components",
    "paired_differences",
    "pca_direction",
    "probe_direction",
    "project_out",
    "select_refusal_layer",
    "site_range",
]
