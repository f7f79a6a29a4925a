"""Validation arms: known answers planted where the estimator looks (DESIGN.md §5, issue 24).

An arm is the point's `VectorSet` with its three emotion entries replaced, so the sweep and the
probes run unchanged on it:

* `emojax.validation.arms`: the placebo (controls relabelled: true Δ = 0) and the spiked arms
  (`normalize(r + λ u)`), and which slot carries which planted signal;
* `emojax.validation.directions`: the planted directions u, learned on a request split that no
  estimate or truth uses (monitoring: conditional LDA at the probe site; steering: the natural
  gradient of the model's own failing responses at the injection layer), both orthogonal to
  the controls;
* `emojax.validation.splits`: disjoint learning / estimate / truth request splits;
* `emojax.validation.schedules`: the planted scenarios along the axis (`validation.scenario`);
* `emojax.validation.truth`: the planted outcome, the break rule on the measured truths;
* `emojax.validation.study` (imported on its own: it runs the pipeline, a layer above): the
  known-answer study over seeds behind `scripts/calibrate.py --validation`.
"""

from emojax.validation.arms import (
    CONTROLS,
    DEFAULT_SLOTS,
    EMOTIONS,
    PLACEBOS,
    SIGNALS,
    Spikes,
    arm_for,
    placebo_vectors,
    random_directions,
    slot_directions,
    spiked_vectors,
)
from emojax.validation.directions import (
    FAILURE_TYPES,
    UnsteeredPass,
    monitoring_direction,
    neutral_fisher,
    orthogonalise,
    response_gradients,
    spike_directions,
    steering_direction,
    unsteered_pass,
)
from emojax.validation.schedules import PLACEBO, SCENARIOS, expected_outcome, schedule
from emojax.validation.splits import DEFAULT_FRACTIONS, SPLITS, RequestSplits, split_requests
from emojax.validation.truth import planted_outcome, zero_width

__all__ = [
    "CONTROLS",
    "DEFAULT_FRACTIONS",
    "DEFAULT_SLOTS",
    "EMOTIONS",
    "FAILURE_TYPES",
    "PLACEBO",
    "PLACEBOS",
    "SCENARIOS",
    "SIGNALS",
    "SPLITS",
    "RequestSplits",
    "Spikes",
    "UnsteeredPass",
    "arm_for",
    "expected_outcome",
    "monitoring_direction",
    "neutral_fisher",
    "orthogonalise",
    "placebo_vectors",
    "planted_outcome",
    "random_directions",
    "response_gradients",
    "schedule",
    "slot_directions",
    "spike_directions",
    "spiked_vectors",
    "split_requests",
    "steering_direction",
    "unsteered_pass",
    "zero_width",
]
