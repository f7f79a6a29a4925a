"""Zoo scenarios: planted ground truths the break-point pipeline must recover.

The zoo's responder decides in two stages (`emojax.zoo.corpus`): the first response token
follows the policy (request severity, framing, the caution cue, the stage's threshold) with
no emotion term, then a compliant start may be taken back within a few tokens
("sure ... wait , I cannot help with that ."). A scenario sets, per stage, how strongly the
emotional state moves that take-back (`Scenario.coupling`: a multiplier on
`planted.STATE_OFFSET` of the emotion states in the take-back logit; concern raises it,
eagerness lowers it). Where the coupling is 0 the take-back depends on the request's
severity only, so the emotional state adds nothing to what the first-token policy logit and
the controls know about failures; where it is not 0 the state decides failures beyond the
policy logit. Caution, a control, moves the first token at every stage of every scenario.
Each scenario states the answer the estimator should give on the default axis (base,
instruct, safety-1, safety-2, safety-3):

  vanishing   coupled in base, instruct, safety-1; absorbed by the policy at safety-2 while
              failures persist (framed harmful requests still get a compliant start that
              severity-1 requests keep): break at safety-2.
  persistent  coupled at every stage: the break is not reached.
  early       coupled in base only: break at instruct.
  null        no coupling anywhere: emotion adds nothing from the first point (break at base).

Choose one with `--config.zoo.scenario=<name>`; it is part of the zoo's cache hash, so every
scenario builds its own zoo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES: tuple[str, ...] = ("base", "instruct", "safety-1", "safety-2", "safety-3")
OUTCOMES: tuple[str, ...] = ("break", "not reached", "failures eliminated first")


@dataclass(frozen=True)
class Scenario:
    """One planted truth of the zoo.

    Attributes:
      name: the key in SCENARIOS (the config value `zoo.scenario`).
      coupling: {stage: multiplier on the emotion states' offsets in the take-back of a
        compliant start}; 0 = absorbed (the take-back ignores the emotional state).
      expected_break: the stage where emotion value has vanished from then on (None when
        it never does on the default axis).
      expected_outcome: 'break' or 'not reached' (see OUTCOMES).
      description: one sentence for reports.
    """

    name: str
    coupling: dict[str, float] = field(hash=False)
    expected_break: str | None
    expected_outcome: str
    description: str

    def coupling_at(self, stage: str) -> float:
        """The multiplier at `stage` (a name in STAGES)."""
        if stage not in self.coupling:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        return float(self.coupling[stage])

    def coupled_stages(self) -> tuple[str, ...]:
        """Stages where the emotional state moves the take-back of compliant starts."""
        return tuple(s for s in STAGES if self.coupling[s] != 0)


def _coupling(*values: float) -> dict[str, float]:
    return dict(zip(STAGES, values, strict=True))


SCENARIOS: dict[str, Scenario] = {
    "vanishing": Scenario(
        "vanishing",
        _coupling(1, 1, 1, 0, 0),
        "safety-2",
        "break",
        "emotion coupling absorbed by the policy at safety-2 while failures persist",
    ),
    "persistent": Scenario(
        "persistent",
        _coupling(1, 1, 1, 1, 1),
        None,
        "not reached",
        "emotion coupling survives to the last model",
    ),
    "early": Scenario(
        "early",
        _coupling(1, 0, 0, 0, 0),
        "instruct",
        "break",
        "emotion coupling in the base model only",
    ),
    "null": Scenario(
        "null",
        _coupling(0, 0, 0, 0, 0),
        "base",
        "break",
        "no emotion coupling anywhere",
    ),
}
DEFAULT_SCENARIO = "vanishing"


def get_scenario(name: str | Scenario | None = None) -> Scenario:
    """The scenario called `name` (None = DEFAULT_SCENARIO; a Scenario is returned as is)."""
    if isinstance(name, Scenario):
        return name
    name = name or DEFAULT_SCENARIO
    if name not in SCENARIOS:
        raise ValueError(f"unknown zoo scenario {name!r}; expected one of {tuple(SCENARIOS)}")
    return SCENARIOS[name]
