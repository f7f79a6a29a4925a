"""The tokenised prompts of a sweep: evaluation prompts in the chat template and neutral text.

Dimension legend: N evaluation prompts, T their padded length, M neutral prompts, T' their
padded length, U requests (the unit of every resampling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from emojax import results as res


@dataclasses.dataclass
class SweepPrompts:
    """Tokenised prompts of a sweep (left-padded to fixed lengths).

    Attributes:
      tokens: int32 [N, T] evaluation prompts in the chat template, ending with the assistant
        header (so the last position predicts the first response token).
      mask: int32 [N, T] 1 for real tokens.
      harmful: bool [N] True for harmful requests.
      kinds: N kind names ('harmful', 'harmless', 'borderline', ...).
      neutral_tokens: int32 [M, T'] neutral text (KL at the last position, cross-entropy).
      neutral_mask: int32 [M, T'].
      ids: N prompt ids (for the record).
      request: int [N] index of each prompt's underlying request (cue and framing variants
        of one request share it; the unit of every resampling). Default: one per prompt.
      num_requests: U, the size of the request index space (requests may be shared with
        other prompt sets of the same analysis, so U can exceed the number used here).
    """

    tokens: np.ndarray
    mask: np.ndarray
    harmful: np.ndarray
    kinds: tuple[str, ...]
    neutral_tokens: np.ndarray
    neutral_mask: np.ndarray
    ids: tuple[str, ...] = ()
    request: np.ndarray | None = None
    num_requests: int = 0

    def __post_init__(self):
        if self.request is None:
            self.request = np.arange(len(self.tokens))
        self.request = np.asarray(self.request, np.int32)
        self.num_requests = int(max(self.num_requests, self.request.max(initial=-1) + 1))
        if self.request.shape != (len(self.tokens),) or self.request.min(initial=0) < 0:
            raise ValueError("request must be [N] non-negative request indices")
        self.tokens = np.asarray(self.tokens, np.int32)
        self.mask = np.asarray(self.mask, np.int32)
        self.harmful = np.asarray(self.harmful, bool)
        self.kinds = tuple(self.kinds)
        self.neutral_tokens = np.asarray(self.neutral_tokens, np.int32)
        self.neutral_mask = np.asarray(self.neutral_mask, np.int32)
        if self.tokens.shape != self.mask.shape or self.harmful.shape != self.tokens.shape[:1]:
            raise ValueError("tokens, mask [N, T] and harmful [N] disagree")
        if self.mask[:, -1].min() < 1 or self.neutral_mask[:, -1].min() < 1:
            raise ValueError("prompts must be left-padded (last position a real token)")

    @property
    def num_prompts(self) -> int:
        """N, the number of evaluation prompts."""
        return self.tokens.shape[0]

    def fingerprint(self) -> str:
        """A hash of every token, mask and label (keys the sweep's chunk store)."""
        return res.fingerprint(
            [self.tokens, self.mask, self.harmful, self.neutral_tokens, self.neutral_mask,
             self.request]
        )  # fmt: skip

    @classmethod
    def from_texts(
        cls,
        tokenizer: Any,
        eval_texts: Sequence[str],
        harmful: Sequence[bool],
        kinds: Sequence[str],
        neutral_texts: Sequence[str],
        *,
        template_source: Any = None,
        pad_multiple: int = 16,
        ids: Sequence[str] = (),
        request: Sequence[int] | None = None,
        num_requests: int = 0,
    ) -> SweepPrompts:
        """Formats `eval_texts` through the chat template and tokenises everything.

        Neutral texts are tokenised as plain text (with the tokenizer's special tokens).
        Lengths are rounded up to `pad_multiple` so models of one family share compiles.
        """
        from emojax.concepts.chat import format_chat, left_pad

        pad_id = _pad_id(tokenizer)
        ev = [
            tokenizer.encode(format_chat(tokenizer, t, template_source), add_special_tokens=False)
            for t in eval_texts
        ]
        ne = [tokenizer.encode(t) for t in neutral_texts]
        rnd = lambda n: -(-n // pad_multiple) * pad_multiple
        tokens, mask = left_pad(ev, pad_id, rnd(max(map(len, ev))))
        ntokens, nmask = left_pad(ne, pad_id, rnd(max(map(len, ne))))
        return cls(
            tokens, mask, np.asarray(harmful, bool), tuple(kinds), ntokens, nmask, tuple(ids),
            None if request is None else np.asarray(request), num_requests,
        )  # fmt: skip

    @classmethod
    def from_concepts(
        cls,
        tokenizer: Any,
        *,
        num_per_kind: int | dict[str, int] = 16,
        num_neutral: int = 16,
        split: str | None = "test",
        template_source: Any = None,
        kinds: Sequence[str] = ("harmful", "harmless", "borderline"),
        data_dir: str | None = None,
        rendering: str = "zoo",
    ) -> SweepPrompts:
        """Evaluation prompts from the datasets (`emojax.concepts`).

        `num_per_kind` is a count for every kind or `{kind: count}` (kinds with a count).
        `data_dir` holds the user's eval_<kind> files (others fall back to the shipped ones);
        `rendering` is 'zoo' or 'english'.
        """
        from emojax import concepts

        if isinstance(num_per_kind, dict):
            kinds = tuple(num_per_kind)
        items = []
        for kind in kinds:
            limit = num_per_kind[kind] if isinstance(num_per_kind, dict) else num_per_kind
            items += concepts.load_eval(
                kind, split, limit=limit, data_dir=data_dir, rendering=rendering
            )
        neutral = concepts.load_eval(
            "neutral", split, limit=num_neutral, data_dir=data_dir, rendering=rendering
        )
        return cls.from_texts(
            tokenizer,
            [p.text for p in items],
            [p.kind == "harmful" for p in items],
            [p.kind for p in items],
            [p.text for p in neutral],
            template_source=template_source,
            ids=[p.id for p in items],
        )


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0
