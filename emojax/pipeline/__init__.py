"""The end-to-end break-point analysis: every stage, at every point of the axis.

Data flow per axis point (DESIGN.md §1):
`loading -> extract (vectors, stability) -> behaviour (the model's own failures) -> probes
(Δ_mon) -> power preflight -> sweep of stratified requests (steering readouts, modularity,
Δ_steer) -> breakpoint`.

Before any work, `run` checks the work directory (`emojax.workdir`: same config resumes,
another config is refused before anything is written) and every axis point's checkpoint
(`preflight`: config.json and weight headers, no weights loaded). Everything a point produces
is written under `<workdir>/points/<label>/`; the axis-level tables, plots, `report.md` and
(last) `summary.json` are written by `emojax.report`. Every file is published atomically.

* `emojax.pipeline.axis`: the axis's checkpoints, `preflight`, and its points one at a time.
* `emojax.pipeline.evalset`: the evaluation set, the data files a run reads, shared draws.
* `emojax.pipeline.behaviour`: the unsteered model's responses, refusal scores and features.
* `emojax.pipeline.values`: Δ_mon and Δ_steer per failure type, both scales, with their
  nulls; the failure rates.
* `emojax.pipeline.stratify`: the steered requests, stratified by unsteered outcome.
* `emojax.pipeline.power`: the power preflight before each sweep.
* `emojax.pipeline.examples`: example generations for the report.
* `emojax.pipeline.point`: every measurement at one axis point (`point_values`,
  `analyse_point`).
* `emojax.pipeline.analysis`: the whole run (`run`).
* `emojax.pipeline.progress`: progress lines and timed stages.
"""

from emojax.pipeline.analysis import (
    break_inputs,
    preflight_table,
    required_names,
    run,
    value_names,
)
from emojax.pipeline.axis import (
    TOKENIZER_FILES,
    AxisPoint,
    axis_checkpoints,
    axis_points,
    dial_prefix,
    load_point_model,
    preflight,
    resolve_paths,
)
from emojax.pipeline.behaviour import classifier, unsteered_behaviour
from emojax.pipeline.evalset import (
    FAILURE_TYPES,
    HARMBENCH_ORDER_SEED,
    HARMFUL_EVAL_SOURCES,
    TYPE_KINDS,
    Draws,
    EvalSet,
    data_files,
    evaluation_set,
    harmbench_eval,
    shared_draws,
)
from emojax.pipeline.point import (
    analyse_point,
    point_values,
    run_extraction,
    run_steering,
    style_summary,
)
from emojax.pipeline.power import PowerError, power_preflight
from emojax.pipeline.progress import Progress, quiet_library_logs, stage
from emojax.pipeline.stratify import SteeredSample, steered_sample
from emojax.pipeline.values import (
    failure_rates,
    headline_site,
    monitoring_value,
    random_directions,
    steering_value,
)
from emojax.workdir import claim_workdir

__all__ = [
    "AxisPoint",
    "Draws",
    "EvalSet",
    "FAILURE_TYPES",
    "HARMBENCH_ORDER_SEED",
    "HARMFUL_EVAL_SOURCES",
    "PowerError",
    "Progress",
    "SteeredSample",
    "TOKENIZER_FILES",
    "TYPE_KINDS",
    "analyse_point",
    "break_inputs",
    "point_values",
    "preflight_table",
    "required_names",
    "axis_checkpoints",
    "axis_points",
    "claim_workdir",
    "classifier",
    "data_files",
    "dial_prefix",
    "evaluation_set",
    "failure_rates",
    "power_preflight",
    "steered_sample",
    "harmbench_eval",
    "headline_site",
    "load_point_model",
    "monitoring_value",
    "preflight",
    "quiet_library_logs",
    "random_directions",
    "resolve_paths",
    "run",
    "run_extraction",
    "run_steering",
    "shared_draws",
    "stage",
    "steering_value",
    "style_summary",
    "unsteered_behaviour",
    "value_names",
]
