"""Known answers in a run (`validation.scenario`, DESIGN.md §5): the validation arms of
`emojax.validation` put where the estimator looks, their truths measured on many more
requests, and the planted outcome beside the recovered one.

Dimension legend: P axis points, U requests.

With a scenario other than "none" the evaluation set's requests are split three ways
(`validation.split_requests`): the *learning* split gives each point's planted directions,
the *estimate* split is what the pipeline measures as usual, the *truth* split (several times
larger) measures the same estimator's value of the same arm (`point_values` without draws).
At point i the emotion entries of the VectorSet are replaced by the arm the schedule gives
there: the placebo (control directions relabelled) or the spiked arm normalize(r + λ u). The
break rule on the truths gives the planted outcome; the break rule on the estimates is the
run's `break_point` as always.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from emojax import concepts, validation, vectors
from emojax.pipeline.axis import AxisPoint
from emojax.pipeline.behaviour import classifier
from emojax.pipeline.evalset import FAILURE_TYPES, EvalSet
from emojax.pipeline.values import headline_site
from emojax.sweep import resolve_layers


@dataclasses.dataclass(frozen=True)
class KnownAnswers:
    """The validation plan of a run.

    Attributes:
      scenario: `validation.scenario`.
      schedule: [P] λ per point, or None for the placebo.
      splits: the learning / estimate / truth request splits.
    """

    scenario: str
    schedule: list
    splits: validation.RequestSplits


def plan(cfg, evalset: EvalSet, num_points: int) -> KnownAnswers | None:
    """The run's validation plan, or None when `validation.scenario` is "none" (or absent)."""
    v = cfg.get("validation")
    scenario = "none" if v is None else str(v.scenario)
    if scenario == "none":
        return None
    sched = validation.schedule(scenario, num_points, float(v.lam), off=str(v.off))
    splits = validation.split_requests(evalset, int(v.seed), tuple(v.fractions))
    return KnownAnswers(scenario, sched, splits)


def truth_config(cfg):
    """The config of a truth: the sweep steers every request of the truth split (no stratified
    cap: `sweep.failing_requests` = `sweep.ok_requests` = 0, all)."""
    out = cfg.copy_and_resolve_references()
    out.sweep.failing_requests = 0
    out.sweep.ok_requests = 0
    return out


def learn_spikes(point: AxisPoint, vs: vectors.VectorSet, splits, cfg) -> validation.Spikes:
    """The point's planted directions, learned on the learning split; the neutral-KL Fisher
    on the training split's neutral texts, which no estimate or truth reads."""
    model = point.model
    neutral = concepts.load_eval(
        "neutral", "train", limit=max(len(splits.learn.neutral), 16),
        rendering=cfg.data.get("rendering", "zoo"),
    )  # fmt: skip
    learn = dataclasses.replace(splits.learn, neutral=tuple(q.text for q in neutral))
    return validation.spike_directions(
        model, learn.prompts(model.tokenizer, cfg), vs,
        site=headline_site(cfg.probes.layer, model.config.num_layers + 1),
        layer=resolve_layers(cfg.sweep.layers, model.config.num_layers)[0],
        controls=tuple(cfg.data.controls), classify=classifier(cfg),
        max_new_tokens=int(cfg.probes.max_new_tokens), batch_size=int(cfg.probes.batch_size),
    )  # fmt: skip


def arm(known: KnownAnswers, index: int, point: AxisPoint, vs: vectors.VectorSet, cfg):
    """The VectorSet of point `index` whose emotions are the scheduled validation arm."""
    v = cfg.validation
    entry = known.schedule[index]
    spikes = None if entry is None else learn_spikes(point, vs, known.splits, cfg)
    return validation.arm_for(entry, vs, spikes, int(v.seed), placebo=str(v.placebo))


def truth_of(values: dict) -> dict:
    """The full-data values of `point_values` on the truth split: Δ name -> {scale: value}
    (NaN where not estimable), and the failure rates."""
    out = {}
    for stat, per_type in (("delta_mon", values["mon"]["types"]), ("delta_steer", values["steer"])):
        for t in FAILURE_TYPES:
            v = per_type[t]
            out[f"{stat}/{t}"] = {s: float(v[s]["estimate"]) if v["estimable"] else float("nan")
                                  for s in ("absolute", "relative")}  # fmt: skip
    rates = {t: float(values["rates"][t]["estimate"]) for t in FAILURE_TYPES}
    return {"values": out, "failure_rates": rates}


def summary(known: KnownAnswers, labels: list[str], truths: list[dict], deltas: dict,
            brk, margins: dict, cfg) -> dict:  # fmt: skip
    """`summary.json`'s `validation`: the plan, the measured truths, the planted outcome (the
    rule on the truths), the recovered one and whether each interval covers its truth."""
    b = cfg.breakpoint
    scale = {name: d.get("scale", "absolute") for name, d in deltas.items()}
    on_rule = {name: np.array([t["values"][name][scale[name]] for t in truths])
               for name in deltas}  # fmt: skip
    rates = {t: np.array([x["failure_rates"][t] for x in truths]) for t in FAILURE_TYPES}
    planted = validation.planted_outcome(
        labels, on_rule, margins, required=list(brk.required), failure_rates=rates,
        floor=float(b.failure_floor),
    )  # fmt: skip
    covered = {}
    for name, d in deltas.items():
        lo, hi, truth = np.asarray(d["lo"]), np.asarray(d["hi"]), on_rule[name]
        ok = np.asarray(d["estimable"], bool) & np.isfinite(truth)
        inside = (lo <= truth) & (truth <= hi)
        covered[name] = [bool(c) if o else None for c, o in zip(inside, ok, strict=True)]
    return {
        "scenario": known.scenario,
        "schedule": ["placebo" if x is None else x for x in known.schedule],
        "splits": known.splits.sizes(),
        "truth": {name: [t["values"][name] for t in truths] for name in deltas},
        "truth_failure_rates": {t: rates[t].tolist() for t in FAILURE_TYPES},
        "planted": planted.to_json(),
        "recovered": {"outcome": brk.outcome, "index": brk.index, "label": brk.label},
        "recovered_matches_planted": (brk.outcome, brk.index) == (planted.outcome, planted.index),
        "covered": covered,
    }
