"""Validation arms as `VectorSet`s: the placebo and the spiked arms.

Dimension legend: C concepts, L residual sites (L + 1 of the model), D model width.

An arm is the point's `VectorSet` with its three emotion entries replaced; the sweep and the
probes then treat the replacements as the emotions, so the estimator runs unchanged. Entries
stay unit directions (the set's `layer_norms` is the steering unit of every entry), so every
arm is norm-matched to the emotions it replaces.

**Placebo** (`placebo_vectors`): the emotions become control directions or mixes of them, at
every site. Their projections are linear combinations of the control projections, so a monitor
that already has the controls gains nothing: true Δ_mon = 0 up to the regularisation of the
extra columns. For steering, the controls arm searches refusal x harm-salience, refusal x
caution and harm-salience x caution; the emotion arm searches refusal x each emotion. The
``relabel`` placebo (concern = harm-salience, eagerness = caution, self-doubt = their
normalised sum) makes two of the emotion arm's grids *identical* to two of the controls arm's
grids, and the third a plane of the same controls space (refusal x a harm-salience / caution
mix in place of harm-salience x caution). No placebo of the form refusal x e can reproduce
the harm-salience x caution grid, which contains no refusal axis, so the arms are exchangeable
up to that one grid: the placebo's Δ_steer is 0 whenever the best cell lies in a shared grid
and otherwise measures refusal x mix against harm-salience x caution. Its truth is measured,
never assumed. The ``mix`` placebo (each emotion a seeded random unit mix of all three
controls) is offered for comparison: its grids share no cell with the controls arm.

**Spiked** (`spiked_vectors`): emotion entry i at site l is ``normalize(r_i[l] + λ u_i[l])``
with r_i[l] a seeded random unit direction (the same for every λ: arms at different λ differ
in λ only) and u_i[l] the unit sum of the planted directions its slot carries at that site
(`DEFAULT_SLOTS`); sites without a planted direction keep r_i[l]. λ = 0 is a pure random arm,
distributed as an arm of the random-direction null.

Slots. Three entries carry four signals (Δ_mon and Δ_steer, each for harmful compliance and
over-refusal). Steering needs one grid per failure type: the emotion arm picks its best grid
per fold, and a direction that lowers one failure type raises the other on the zoo (the
`steer_tolerance` then forbids it), so the two steering directions get their own slots
(concern: harmful compliance, eagerness: over-refusal). A monitor uses all three projections
at once, so one slot (self-doubt) carries both monitoring directions: each failure type's probe
reads its direction from it and treats the other as a nuisance column. The steering slots are
projected by the monitor too (and the monitoring slot steered): their truths are measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from emojax.vectors import VectorSet

EMOTIONS = ("concern", "eagerness", "self_doubt")
CONTROLS = ("harm_salience", "caution", "refusal")
SIGNALS = (
    "mon/harmful_compliance",
    "mon/over_refusal",
    "steer/harmful_compliance",
    "steer/over_refusal",
)
DEFAULT_SLOTS: dict[str, tuple[str, ...]] = {
    "concern": ("steer/harmful_compliance",),
    "eagerness": ("steer/over_refusal",),
    "self_doubt": ("mon/harmful_compliance", "mon/over_refusal"),
}
PLACEBOS = ("relabel", "mix")


@dataclasses.dataclass(frozen=True)
class Spikes:
    """Planted directions of one axis point.

    Attributes:
      directions: signal (one of `SIGNALS`) -> {site: [D] unit direction orthogonal to the
        control directions at that site}.
      info: JSON-ready provenance (how each was learned, counts).
    """

    directions: dict[str, dict[int, np.ndarray]]
    info: dict = dataclasses.field(default_factory=dict)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def random_directions(num: int, num_sites: int, width: int, seed: int) -> np.ndarray:
    """[num, L, D] seeded random unit directions (a fresh one per entry and site)."""
    r = np.random.default_rng([int(seed), 101]).standard_normal((num, num_sites, width))
    return _unit(r)


def _replace(vs: VectorSet, entries: Mapping[str, np.ndarray], tag: dict) -> VectorSet:
    """`vs` with the named entries' directions [L, D] replaced (scales kept: norm-matched)."""
    vectors = vs.vectors.copy()
    for name, v in entries.items():
        vectors[vs.index(name)] = _unit(np.asarray(v, np.float32))
    meta = {**vs.metadata, "validation": tag}
    return dataclasses.replace(vs, vectors=vectors, metadata=meta)


def placebo_vectors(
    vs: VectorSet,
    *,
    mode: str = "relabel",
    seed: int = 0,
    emotions: Sequence[str] = EMOTIONS,
    controls: Sequence[str] = CONTROLS,
) -> VectorSet:
    """The placebo arm: the emotion entries replaced by control directions or their mixes.

    Args:
      vs: the point's vector set (emotions and controls at every site).
      mode: 'relabel' (emotion 0 = controls[0], emotion 1 = controls[1], emotion 2 = the
        unit sum of both; see the module docstring) or 'mix' (seeded random unit mixes of all
        the controls, fresh per emotion).
      seed: the mixes' seed ('mix').
      emotions: the entries replaced.
      controls: the control entries (harm-salience, caution, refusal: the refusal direction is
        the shared axis of every steering grid, so 'relabel' uses the other two).

    Returns:
      A new VectorSet; `metadata['validation']` records the arm.
    """
    if mode not in PLACEBOS:
        raise ValueError(f"placebo mode must be one of {PLACEBOS}, not {mode!r}")
    ctrl = np.stack([vs.vectors[vs.index(c)] for c in controls]).astype(np.float64)  # [3, L, D]
    if mode == "relabel":
        mixes = np.zeros((len(emotions), len(controls)))
        for i in range(len(emotions)):
            mixes[i, :2] = (1.0, 0.0) if i % 3 == 0 else (0.0, 1.0) if i % 3 == 1 else (1.0, 1.0)
    else:
        mixes = np.random.default_rng([int(seed), 103]).standard_normal(
            (len(emotions), len(controls))
        )
    entries = {e: np.einsum("c,cld->ld", mixes[i], ctrl) for i, e in enumerate(emotions)}
    tag = {"arm": "placebo", "mode": mode, "seed": int(seed), "mixes": mixes.tolist(),
           "controls": list(controls)}  # fmt: skip
    return _replace(vs, entries, tag)


def slot_directions(
    spikes: Spikes, slots: Mapping[str, Sequence[str]], num_sites: int, width: int
) -> dict[str, np.ndarray]:
    """entry -> [L, D] planted direction per site (unit sum of its signals; 0 where none)."""
    out = {}
    for entry, signals in slots.items():
        u = np.zeros((num_sites, width))
        for s in signals:
            if s not in SIGNALS:
                raise ValueError(f"unknown signal {s!r}; expected one of {SIGNALS}")
            for site, d in spikes.directions.get(s, {}).items():
                u[site] += _unit(np.asarray(d, np.float64))
        out[entry] = _unit(u) * (np.linalg.norm(u, axis=-1, keepdims=True) > 1e-12)
    return out


def spiked_vectors(
    vs: VectorSet,
    spikes: Spikes,
    lam: float,
    seed: int,
    *,
    slots: Mapping[str, Sequence[str]] | None = None,
) -> VectorSet:
    """The spiked arm: emotion entry i = normalize(r_i + λ u_i) at every site.

    Args:
      vs: the point's vector set.
      spikes: the planted directions (`emojax.validation.directions.spike_directions`).
      lam: λ >= 0 (0: a pure random arm).
      seed: seed of the random parts r_i (keep it across λ: the arms then differ in λ only).
      slots: entry -> the signals it carries (default `DEFAULT_SLOTS`).

    Returns:
      A new VectorSet; `metadata['validation']` records λ, the seed and the slots.
    """
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    slots = dict(DEFAULT_SLOTS if slots is None else slots)
    _, num_sites, width = vs.vectors.shape
    r = random_directions(len(slots), num_sites, width, seed)
    u = slot_directions(spikes, slots, num_sites, width)
    entries = {e: r[i] + lam * u[e] for i, e in enumerate(slots)}
    tag = {"arm": "spiked", "lam": float(lam), "seed": int(seed),
           "slots": {k: list(v) for k, v in slots.items()}}  # fmt: skip
    return _replace(vs, entries, tag)


def arm_for(
    entry: float | None,
    vs: VectorSet,
    spikes: Spikes | None,
    seed: int,
    *,
    placebo: str = "relabel",
    slots: Mapping[str, Sequence[str]] | None = None,
) -> VectorSet:
    """The arm a schedule entry plants: the placebo (None) or the spiked arm at λ = `entry`.

    Args:
      entry: a schedule entry (`emojax.validation.schedules.schedule`).
      vs: the point's vector set.
      spikes: the point's planted directions (unused for the placebo).
      seed: seed of the random parts (and of a 'mix' placebo).
      placebo: the placebo's mode.
      slots: as for `spiked_vectors`.
    """
    if entry is None:
        return placebo_vectors(vs, mode=placebo, seed=seed)
    if spikes is None:
        raise ValueError("a spiked arm needs the point's planted directions")
    return spiked_vectors(vs, spikes, float(entry), seed, slots=slots)
