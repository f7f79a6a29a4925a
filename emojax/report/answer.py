"""The answer of a run in words: the headline, the break sentence and the caveats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from emojax.breakpoint import BreakPoint
from emojax.report.words import (
    FAILURE_TYPES,
    delta_name,
    delta_names,
    finite,
    rule_scale,
    share,
)


def _undetermined_at(brk: BreakPoint, ftype: str) -> tuple[int | None, list[str]]:
    """Where the rule stops for a type with 'insufficient data': the last point whose required
    Δs have not all vanished (or been eliminated), and its undetermined required Δs."""
    req = [n for n in brk.required if n.split("/", 1)[-1] == ftype]
    num_points = len(next(iter(brk.status.values())))
    gone = [all(brk.status[n][i] in ("vanished", "failures eliminated") for n in req)
            for i in range(num_points)]  # fmt: skip
    last = max((i for i, g in enumerate(gone) if not g), default=None)
    if last is None:
        return None, []
    return last, [n for n in req if brk.status[n][last] == "undetermined"]


def headline(brk: BreakPoint, labels: Sequence[str], rows: Sequence[Mapping]) -> str:
    """The report's first sentence: the outcome, and which Δs were required and estimable."""
    p = len(labels)
    if brk.outcome == "break":
        first = (
            f"**Break at {brk.label}**: from {brk.label} on, every required Δ has vanished (upper "
            f"95 % bound below its margin) or its failures are eliminated; 95 % interval "
            f"{brk.interval[0]} … {brk.interval[1]}, a break in {share(brk.reached_fraction)} of "
            "request resamples."
        )
    elif brk.outcome == "failures eliminated first":
        first = (
            f"**Failures eliminated first** (at {brk.label}): the policy removed the failures "
            "before emotion value was shown to vanish, so no point where emotions stop adding "
            "safety value can be stated."
        )
    elif brk.outcome == "not reached":
        kept = [n for n in brk.required if brk.status[n][-1] == "present"]
        first = (
            f"**Not reached**: at the last point ({labels[-1]}) "
            f"{delta_names(kept) or 'a required Δ'} is still present, so emotion-based safety "
            "value does not vanish on this axis."
        )
    else:
        parts = []
        for t, v in brk.per_type.items():
            if v["outcome"] != "insufficient data":
                continue
            at, names = _undetermined_at(brk, t)
            for n in names:
                why = "not estimable" if not brk.estimable[n][at] else "interval straddles margin"
                parts.append(f"{delta_name(n)} at {labels[at]} ({why})")
        first = (
            "**Insufficient data**: the rule can neither place a break nor say that it is not "
            "reached, because a required Δ is undetermined where the rule needs it"
            + (f": {'; '.join(parts)}." if parts else ".")
        )
    counts = ", ".join(f"{delta_name(n)} {sum(brk.estimable[n])}/{p}" for n in brk.required)
    optional = [n for n in brk.estimable if n not in brk.required]
    tail = f" Required: {delta_names(brk.required)}; estimable at (points of {p}): {counts}."
    if optional:
        tail += f" Not required: {delta_names(optional)}."
    return first + tail


def break_sentence(brk: BreakPoint, margins: dict[str, float], kappa: float) -> str:
    """One paragraph: the break rule's outcome, in words, with what it rests on."""
    types = "; ".join(
        f"{t.replace('_', ' ')}: {v['outcome']}" + (f" at {v['label']}" if v["label"] else "")
        for t, v in brk.per_type.items()
    )
    rule = (
        f"every required Δ ({delta_names(brk.required)}) is vanished (upper 95 % bound below its "
        f"margin) or its failures are eliminated (rate's upper bound below {brk.floor:g}); "
        f"Δ_steer read at KL budget κ = {kappa:g}"
    )
    draws = ", ".join(f"{o} {share(s)}" for o, s in brk.draw_outcomes.items() if s > 0)
    tail = (
        f" Per failure type: {types}. 95 % interval (request bootstrap, same rule, "
        f"{brk.num_draws} draws): {brk.interval[0]} … {brk.interval[1]}; a break in "
        f"{share(brk.reached_fraction)} of resamples (outcomes of the draws: {draws})."
    )
    if brk.outcome == "break":
        return (
            f"Emotion-based monitoring and steering stop adding safety value over the "
            f"non-emotional controls at **{brk.label}**: from there on, {rule}." + tail
        )
    if brk.outcome == "failures eliminated first":
        return (
            f"**Failures eliminated first** (at {brk.label}): the policy removed the failures "
            "before emotion value was shown to vanish." + tail
        )
    if brk.outcome == "insufficient data":
        return (
            "**Insufficient data**: a required Δ is undetermined (not estimable, or its "
            "interval straddles the margin) where the rule needs it, so no break and no "
            "'not reached' can be stated." + tail
        )
    return (
        "**Not reached** on this axis: at the last point a required Δ is still present (its "
        "interval excludes 0 and its upper bound is not below the margin)." + tail
    )


def caveats(cfg, brk: BreakPoint, rows: Sequence[Mapping], zoo: bool) -> list[str]:
    """What the answer rests on, one line each: synthetic models, missing data, power."""
    labels = [r["label"] for r in rows]
    out = []
    if zoo:
        scenario = cfg.zoo.get("scenario", "vanishing")
        known = str(cfg.get("validation", {}).get("scenario", "none")) != "none"
        out.append(
            "These models are emojax's synthetic model organisms, not claims about real "
            "language models. The zoo scenario (`" + scenario + "`) plants a behavioural "
            "story in their training data, a demonstration, not a known answer for the "
            "estimator: "
            + (
                "this run's emotion entries are validation arms, whose planted "
                "outcome is the known answer (below)."
                if known
                else "known answers come from the validation arms (`--config.validation.scenario`)."
            )
        )
    for n in brk.required:
        missing = [labels[i] for i, ok in enumerate(brk.estimable[n]) if not ok]
        if missing:
            key = n.replace("/", "_")
            counts = ", ".join(
                f"{r[f'{key}_failing_requests']}/{r[f'{key}_ok_requests']}"
                for r, ok in zip(rows, brk.estimable[n], strict=True) if not ok
            )  # fmt: skip
            out.append(
                f"{delta_name(n)} is not estimable at {len(missing)} of {len(labels)} points "
                f"({', '.join(missing)}; failing/non-failing requests {counts})."
            )
    weak = []
    for n in brk.required:
        key = n.replace("/", "_")
        m = brk.margins[n]
        under = [r["label"] for r in rows if not finite(r.get(f"{key}_power"))
                 or r[f"{key}_power"] > m]  # fmt: skip
        if under:
            where = "every point" if len(under) == len(rows) else ", ".join(under)
            weak.append(f"{delta_name(n)} at {where}")
    if weak:
        out.append(
            "The power preflight (from the unsteered failure counts, before the sweep) says "
            f"these required Δs cannot confirm their margin: {'; '.join(weak)}."
        )
    scales = " and ".join(f"{s.replace('delta_', 'Δ_')} on the {rule_scale(cfg, s)} scale (margin "
                          f"{brk.margins.get(f'{s}/{FAILURE_TYPES[0]}', float('nan')):g})"
                          for s in ("delta_mon", "delta_steer"))  # fmt: skip
    out.append(
        f"The rule reads {scales}; intervals are cluster bootstraps over requests "
        f"({brk.num_draws} draws, paired across points and Δs)."
    )
    return out
