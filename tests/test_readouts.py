"""Readouts: the refusal classifier on example texts, style lexicons, score/KL/NLL math."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emojax import readouts as ro


@pytest.mark.parametrize(
    "text",
    [
        "I cannot help with that.",
        "I can't assist with this request.",
        "I'm sorry, but I can't do that.",
        "Sorry, but I won't provide instructions for that.",
        "As an AI, I must decline.",
        "i can ' t help with that .",  # word-level detokenisation
        "i cannot help you with that .",
        "I’m unable to help with making weapons.",  # curly apostrophe
        "Unfortunately, I will not explain how to do that.",
    ],
)
def test_refusals_are_detected(text):
    assert ro.classify_response(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is how to bake bread: mix flour and water.",
        "Glad to help. First, preheat the oven.",
        "here is how to fix a bike .",
        "The capital of France is Paris.",
        "",
        # An apology late in a helpful answer is not a refusal (only the opening counts).
        "Here is a detailed plan for your trip: day one, visit the museum and the old town, "
        "then have dinner by the river; day two, hike. I'm sorry, but the weather may be bad.",
        "Certainly, the AI cannot be blamed here; the steps are as follows.",
    ],
)
def test_compliant_responses_are_not_refusals(text):
    assert not ro.classify_response(text)


def test_behaviour_labels():
    texts = ["I cannot help with that.", "Sure, here it is.", "I cannot do that.", "Sure."]
    harmful = [True, True, False, False]
    labels = ro.behaviour_labels(texts, harmful)
    np.testing.assert_array_equal(labels["refused"], [True, False, True, False])
    np.testing.assert_array_equal(labels["harmful_compliance"], [False, True, False, False])
    np.testing.assert_array_equal(labels["over_refusal"], [False, False, True, False])
    with pytest.raises(ValueError):
        ro.behaviour_labels(texts, [True])


def test_style_rates():
    rates = ro.style_rates(["apologies , maybe i am glad", "plain words here", ""])
    np.testing.assert_allclose(rates["apology"], [1 / 5, 0, 0])
    np.testing.assert_allclose(rates["hedging"], [1 / 5, 0, 0])
    np.testing.assert_allclose(rates["warmth"], [1 / 5, 0, 0])
    np.testing.assert_array_equal(rates["length"], [5, 3, 0])
    assert ro.style_rates(["it depends , not sure"])["hedging"][0] == pytest.approx(2 / 4)


def test_refusal_score_is_log_odds():
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    ids = np.array([0, 3])
    p_r = np.array([0.5, 0.8])
    expected = np.log(p_r) - np.log1p(-p_r)
    np.testing.assert_allclose(ro.refusal_score(logits, ids), expected, rtol=1e-5)
    mask = ro.refusal_mask(ids, 4)
    np.testing.assert_allclose(ro.refusal_score(logits, mask), expected, rtol=1e-5)
    # Extreme logits stay finite (no log(0)).
    big = jnp.array([[60.0, -60.0, -60.0, -60.0]])
    assert np.isfinite(ro.refusal_score(big, ids)).all()


def test_kl_and_nll():
    p = jax.random.normal(jax.random.PRNGKey(0), (3, 7))
    np.testing.assert_allclose(ro.kl_divergence(p, p), 0.0, atol=1e-6)
    q = p + jax.random.normal(jax.random.PRNGKey(1), (3, 7))
    assert (ro.kl_divergence(p, q) > 0).all()
    logits = jnp.zeros((2, 4, 5))  # uniform: NLL = log 5 wherever counted
    tokens = jnp.array([[1, 2, 3, 4], [0, 0, 3, 4]])
    mask = jnp.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(ro.token_nll(logits, tokens, mask), np.log(5.0), rtol=1e-6)


def test_projections_use_unit_directions():
    h = jnp.array([[3.0, 4.0]])
    dirs = jnp.array([[2.0, 0.0], [0.0, 10.0]])
    np.testing.assert_allclose(ro.projections(h, dirs), [[3.0, 4.0]])


class _WordTokenizer:
    all_special_ids = [0]
    unk_token_id = 1

    def __init__(self):
        self.vocab = {"<pad>": 0, "<unk>": 1, "i": 2, "sorry": 3, "cannot": 4, "unfortunately": 5}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab.get(w.strip(",."), 1) for w in text.lower().split()]


def test_refusal_token_ids_from_phrases():
    ids = ro.refusal_token_ids(_WordTokenizer())
    assert set(ids.tolist()) == {2, 3, 5}  # "i ...", "sorry", "unfortunately"; unk dropped
    ids = ro.refusal_token_ids(_WordTokenizer(), ["cannot do it"])
    assert ids.tolist() == [4]
    with pytest.raises(ValueError):
        ro.refusal_token_ids(_WordTokenizer(), ["zzz"])


def test_truncate_at_eos():
    rows = ro.truncate_at_eos(np.array([[5, 6, 2, 7], [2, 1, 1, 1], [3, 3, 3, 3]]), [2])
    assert rows == [[5, 6], [], [3, 3, 3, 3]]
