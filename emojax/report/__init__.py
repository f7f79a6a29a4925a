"""Outputs of the break-point analysis: tables, plots, `summary.json` and `report.md`.

Written into the run's work directory, each file atomically (`emojax.results.atomic_write`),
in this order (`summary.json` last: its presence marks a complete run):
  points.csv          one row per axis point
  break_draws.npz     the request draws of every Δ behind the break-point interval
  incremental_value.png, stability_modularity.png, cross_steering.png
  config.json         resolved config + provenance (every checkpoint of the axis with its
                      hashes, the command, the device by name, versions, commit, seed)
  report.md           the answer in one sentence and its caveats, the per-point tables, the
                      models on the axis, example generations, what was run and on what
  summary.json        the break point, thresholds, every axis point's row, config fingerprint
The per-point outputs (`points/<label>/`: vectors, stability tables, sweep readouts per
prompt, probes) and `run.json` (`emojax.workdir`) are written by `emojax.pipeline`.

* `emojax.report.outputs`: `write_outputs` (every file above, in order), `report_markdown`,
  `write_csv`.
* `emojax.report.answer`: the headline, the break sentence and the caveats.
* `emojax.report.tables`: the per-point tables and the example generations.
* `emojax.report.provenance`: the command, the device by name, the axis's checkpoints and
  their provenance, the safety-tuned endpoint's evaluation.
* `emojax.report.figures`: the plots' inputs (the Δs on the rule's scale with their nulls and
  statuses; stability, selectivity, style and policy).
* `emojax.report.words`: numbers, shares and Δ names in words.
"""

from emojax.report.answer import break_sentence, caveats, headline
from emojax.report.figures import (
    RELATIVE_CLIP,
    SCALE_LABELS,
    incremental_panels,
    rule_null,
    stability_inputs,
)
from emojax.report.outputs import report_markdown, write_csv, write_outputs
from emojax.report.provenance import (
    SAFETY_MODEL,
    axis_checkpoints,
    checkpoint_provenance,
    command_line,
    device_name,
    safety_section,
)
from emojax.report.tables import (
    DIAGNOSTICS,
    TABLE_COLUMNS,
    data_line,
    examples_section,
    failure_table,
    markdown_table,
    value_table,
)
from emojax.report.words import FAILURE_TYPES, TYPE_SHORT, delta_name, share

__all__ = [
    "DIAGNOSTICS",
    "FAILURE_TYPES",
    "RELATIVE_CLIP",
    "SAFETY_MODEL",
    "SCALE_LABELS",
    "TABLE_COLUMNS",
    "TYPE_SHORT",
    "axis_checkpoints",
    "break_sentence",
    "caveats",
    "checkpoint_provenance",
    "command_line",
    "data_line",
    "delta_name",
    "device_name",
    "examples_section",
    "failure_table",
    "headline",
    "incremental_panels",
    "markdown_table",
    "report_markdown",
    "rule_null",
    "safety_section",
    "share",
    "stability_inputs",
    "value_table",
    "write_csv",
    "write_outputs",
]
