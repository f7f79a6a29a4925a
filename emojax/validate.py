"""Input validation at the API boundary: every check of user input, in one place.

Dimension legend: B batch, T time, L layers, D model width, V vocabulary, A additive
entries, R ablated directions, S capped directions.

The contract, for `forward`, `generate`, the `Intervention` constructors, extraction and the
sweep:

* **Static checks** (dtype, rank, shape, Python ints such as layers and `max_new_tokens`) run
  on every call, traced or not: they read only shapes and Python values, so they cost nothing
  in a compiled program.
* **Value checks** (token ids in `[0, V)`, finite vectors and coefficients, mask rows with a
  real token, `rng` when sampling) run on concrete inputs and raise a `ValueError` naming the
  argument, the first bad index and its value. On traced inputs (under `jit`, `vmap`, `grad`)
  they are skipped silently: the compiled program gets no extra operation and no host
  transfer.
* **Under `jit`**, opt in with `checked_forward` / `checked_generate`: the same value checks
  run as `jax.experimental.checkify` checks and come back as an error value::

      f = jax.jit(emojax.checked_forward, static_argnames="config")
      err, out = f(params, config, tokens)
      err.throw()  # JaxRuntimeError naming the argument, index and value

Entry points call `forward_inputs` / `generate_inputs` (through `validated`) and the small
`check_*` helpers, so the model code holds no validation logic of its own.

This is the lowest module of emojax: it imports no other part of it (an `Intervention` is
checked by its leaves), so the model core and every file format can use it.
`checked_forward` / `checked_generate` live beside `forward` (`emojax.model`) and `generate`
(`emojax.generate`) and run them through `checkified`.

It stays one module (about 500 lines) because the contract above is one mechanism: every
`check_*` reads its values through `_values` / `_report`, whose traced behaviour (skip, or a
checkify check) is the switch `checkified` sets, so splitting the checks from the jit path
would put one switch in two modules.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

# True while `checkified` (`checked_forward` / `checked_generate`) traces its entry: traced
# value checks then become checkify checks instead of being skipped.
_CHECKIFY = contextvars.ContextVar("emojax_checkify", default=False)


def is_traced(*trees: Any) -> bool:
    """True if any leaf of `trees` is a tracer (the call is being traced by jit/vmap/grad)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def _values(x: Any) -> Any:
    """`x` as a NumPy array to check, a tracer (under checkify only), or None to skip."""
    if isinstance(x, jax.core.Tracer):
        return x if _CHECKIFY.get() else None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None  # spread over hosts: this process cannot read it
    return np.asarray(x)


def _report(bad: Any, error: type[Exception], msg: str, *args: Any) -> None:
    """Fails when `bad` holds: raises `error` (concrete) or adds a checkify check (traced).

    `msg` is a `str.format` string over `args` (0-d arrays: indices and values).
    """
    if isinstance(bad, jax.core.Tracer):
        checkify.check(~bad, msg, *args)
    elif bool(bad):
        raise error(msg.format(*(np.asarray(a).item() for a in args)))


def _first_bad(x: Any, bad: Any, error: type[Exception], msg: str) -> None:
    """Reports the first True of the boolean array `bad` (shaped like x).

    `msg` has `{idx}` for the index (e.g. "[0, 3]") and `{val}` for the value there.
    """
    if bad.size == 0:
        return
    xp = jnp if isinstance(bad, jax.core.Tracer) else np
    flat = xp.argmax(bad.reshape(-1))
    index = xp.unravel_index(flat, bad.shape)
    n = len(index)
    idx = "[" + ", ".join(f"{{{i}}}" for i in range(n)) + "]"
    msg = msg.format(idx=idx, val=f"{{{n}}}")
    _report(xp.any(bad), error, msg, *index, x.reshape(-1)[flat])


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_tokens(tokens: Any, vocab_size: int, *, name: str = "tokens") -> None:
    """Token ids: an integer array [B, T] with every id in `[0, vocab_size)`.

    Raises:
      TypeError: not an array, or not of an integer dtype.
      ValueError: not 2-D, or an id out of range (naming the first bad index and its value).
    """
    if not hasattr(tokens, "shape") or not hasattr(tokens, "dtype"):
        raise TypeError(f"{name} must be an integer array [B, T], got {type(tokens).__name__}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"{name} must be 2-D [B, T] token ids, got shape {_shape(tokens)}")
    x = _values(tokens)
    if x is not None:
        msg = f"{name}{{idx}} = {{val}} is not a token id of this model (vocab_size {vocab_size})"
        _first_bad(x, (x < 0) | (x >= vocab_size), ValueError, msg)


def check_attention_mask(
    mask: Any, shape: tuple[int, int], *, name: str = "attention_mask"
) -> None:
    """A 0/1 mask [B, T] of `tokens`' shape with at least one real token in every row.

    Raises:
      ValueError: a shape other than `shape`, a value other than 0/1, or an all-zero row.
    """
    if not hasattr(mask, "shape"):
        raise TypeError(f"{name} must be an array [B, T], got {type(mask).__name__}")
    if _shape(mask) != tuple(shape):
        raise ValueError(f"{name} has shape {_shape(mask)}, expected {tuple(shape)} (tokens)")
    m = _values(mask)
    if m is None:
        return
    _first_bad(m, (m != 0) & (m != 1), ValueError, f"{name}{{idx}} = {{val}}; must be 0 or 1")
    empty = ~(m != 0).any(axis=1)
    if empty.size:
        xp = jnp if isinstance(empty, jax.core.Tracer) else np
        row = xp.argmax(empty)
        _report(xp.any(empty), ValueError, f"{name} row {{0}} has no real token (all 0)", row)


def check_positions(positions: Any, shape: tuple[int, ...], *, name: str = "positions") -> None:
    """Integer position ids of the given shape."""
    if not hasattr(positions, "dtype") or not jnp.issubdtype(positions.dtype, jnp.integer):
        raise TypeError(
            f"{name} must be an integer array, got {getattr(positions, 'dtype', positions)}"
        )
    if _shape(positions) != tuple(shape):
        raise ValueError(f"{name} has shape {_shape(positions)}, expected {tuple(shape)}")


def check_finite(x: Any, name: str, *, what: str = "") -> None:
    """Every value of `x` finite; the error names `name`, the first bad index and its value.

    Args:
      x: an array or scalar (skipped when traced outside `checked_*`).
      name: the argument, as the error should name it (e.g. "vector", "coef").
      what: appended to the message (e.g. the axes: "[entry, layer, d]").
    """
    v = _values(x)
    if v is None:
        return
    xp = jnp if isinstance(v, jax.core.Tracer) else np
    if not xp.issubdtype(v.dtype, xp.inexact):
        return
    tail = f" {what}" if what else ""
    if v.ndim == 0:
        _report(~xp.isfinite(v), ValueError, f"{name} = {{0}} is not finite{tail}", v)
        return
    _first_bad(v, ~xp.isfinite(v), ValueError, f"{name}{{idx}} = {{val}} is not finite{tail}")


def check_width(x: Any, d_model: int, *, name: str) -> None:
    """A vector whose last axis is d_model wide."""
    if not _shape(x) or _shape(x)[-1] != d_model:
        raise ValueError(f"{name} has shape {_shape(x)}, expected last axis ({d_model},) = d_model")


def check_int(value: Any, *, name: str) -> int:
    """A Python or NumPy integer (or a 0-d integer array); bools and floats are refused.

    Raises:
      TypeError: naming `name` and the value (1.5 is an error, never layer 1).
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got the bool {value}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a concrete integer, got a traced value (under jit, pass a float "
            "layer mask [L] such as jax.nn.one_hot(layer, L) instead)"
        )
    if isinstance(value, np.ndarray | jax.Array) and value.ndim == 0:
        if jnp.issubdtype(value.dtype, jnp.integer):
            return int(value)
    raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")


def check_layer(layer: Any, num_layers: int, *, name: str = "layer") -> int:
    """A layer index in [-L, L) (negative counts from the end) -> its index in [0, L).

    Raises:
      TypeError: not an integer (1.5, True, "2").
      IndexError: out of range for a model with `num_layers` layers.
    """
    i = check_int(layer, name=name)
    if not -num_layers <= i < num_layers:
        raise IndexError(f"{name} {i} is out of range for a model with {num_layers} layers")
    return i % num_layers


def depth_layer(layer: Any, num_layers: int, *, name: str = "layers") -> int:
    """A sweep layer: an integer layer index or a depth fraction in [0, 1) -> a layer in [0, L).

    Raises:
      TypeError: neither an integer nor a real number (e.g. a bool).
      ValueError: a non-integer float outside [0, 1) (1.5 is not layer 1).
      IndexError: an integer out of range.
    """
    if isinstance(layer, bool | np.bool_) or not isinstance(layer, numbers.Real):
        raise TypeError(f"{name} must be an int or a depth fraction, got {layer!r}")
    if isinstance(layer, numbers.Integral):
        return check_layer(layer, num_layers, name=name)
    if not 0.0 <= float(layer) < 1.0:
        raise ValueError(
            f"{name} = {layer!r}: a float is a depth fraction in [0, 1); use an int for a layer"
        )
    return min(int(float(layer) * num_layers), num_layers - 1)


def check_count(value: Any, *, name: str, minimum: int = 0) -> int:
    """An integer >= minimum (e.g. `max_new_tokens >= 0`)."""
    n = check_int(value, name=name)
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def check_sampling(temperature: Any, rng: Any) -> None:
    """temperature finite and >= 0; an `rng` key when temperature > 0 (sampling).

    Raises:
      ValueError: naming `temperature` or `rng`.
    """
    t = _values(temperature)
    if t is None:
        return
    xp = jnp if isinstance(t, jax.core.Tracer) else np
    t = t.astype(xp.float32 if xp is jnp else np.float64)
    bad = ~xp.isfinite(t) | (t < 0)
    _report(xp.any(bad), ValueError, "temperature = {0} must be finite and >= 0", t.max())
    if rng is None:
        msg = "temperature = {0} > 0 samples and needs rng (e.g. rng=jax.random.key(0))"
        _report(xp.any(t > 0), ValueError, msg, t.max())


def check_cap_bounds(min_value: Any, max_value: Any) -> None:
    """Capping bounds: not NaN (+-inf means no bound) and min_value <= max_value."""
    lo, hi = _values(min_value), _values(max_value)
    for name, v in (("min_value", lo), ("max_value", hi)):
        if v is not None:
            xp = jnp if isinstance(v, jax.core.Tracer) else np
            _report(xp.any(xp.isnan(v)), ValueError, f"{name} = {{0}} is NaN", v)
    if lo is not None and hi is not None:
        xp = jnp if is_traced(lo, hi) else np
        msg = "min_value = {0} exceeds max_value = {1}"
        _report(xp.any(lo > hi), ValueError, msg, xp.max(lo), xp.min(hi))


def check_intervention(iv: Any, config: Any, *, name: str = "intervention") -> None:
    """Shapes match the model (L layers, width D) and every vector and bound is usable.

    `iv` is checked by its leaves (this module sits below `emojax.interventions`): anything
    without an `Intervention`'s array leaves is refused.

    Raises:
      TypeError: not an `Intervention` (a leaf is missing).
      ValueError: a leaf shaped for another model, or a NaN/inf vector (naming the entry and
        layer) or a NaN bound.
    """
    num, d = config.num_layers, config.d_model
    want = {  # None: any number of entries
        "add_vectors": (None, num, d),
        "ablate_dirs": (None, d),
        "ablate_layers": (None, num),
        "cap_dirs": (None, d),
        "cap_layers": (None, num),
    }
    bounds = ("cap_min", "cap_max")
    missing = [leaf for leaf in (*want, *bounds) if not hasattr(iv, leaf)]
    if missing:
        raise TypeError(
            f"{name} must be an emojax.Intervention, got {type(iv).__name__} "
            f"(without {', '.join(missing)})"
        )
    for leaf, shape in want.items():
        got = _shape(getattr(iv, leaf))
        fits = len(got) == len(shape)
        if not fits or any(w is not None and g != w for g, w in zip(got, shape, strict=True)):
            expected = tuple("n" if w is None else w for w in shape)
            raise ValueError(
                f"{name}.{leaf} has shape {got}, expected {expected} for a model with "
                f"{num} layers and d_model {d}"
            )
    check_finite(iv.add_vectors, f"{name}.add_vectors", what="(indices: entry, layer, d)")
    check_finite(iv.ablate_dirs, f"{name}.ablate_dirs")
    check_finite(iv.cap_dirs, f"{name}.cap_dirs")
    for leaf in bounds:  # +-inf is a valid (absent) bound, NaN is not
        v = _values(getattr(iv, leaf))
        if v is not None:
            xp = jnp if isinstance(v, jax.core.Tracer) else np
            _first_bad(v, xp.isnan(v), ValueError, f"{name}.{leaf}{{idx}} = {{val}}")


def forward_inputs(
    params: Any,
    config: Any,
    tokens: Any,
    *,
    attention_mask: Any = None,
    positions: Any = None,
    intervention: Any = None,
    start_layer: int = 0,
    resid: Any = None,
    logit_positions: Any = None,
    return_logits: bool = True,
    capture: bool = True,
) -> None:
    """The checks of `emojax.forward`'s arguments (see the module docstring for when)."""
    del params, resid, return_logits, capture  # checked by forward itself / nothing to check
    check_tokens(tokens, config.vocab_size)
    shape = _shape(tokens)
    if attention_mask is not None:
        check_attention_mask(attention_mask, shape)
    if positions is not None:
        check_positions(positions, shape)
    check_int(start_layer, name="start_layer")
    if logit_positions is not None:
        if not hasattr(logit_positions, "dtype") or logit_positions.ndim != 2:
            raise ValueError(
                f"logit_positions must be int [B, P], got shape {_shape(logit_positions)}"
            )
        if not jnp.issubdtype(logit_positions.dtype, jnp.integer):
            raise TypeError(f"logit_positions must be integers, got {logit_positions.dtype}")
        p = _values(logit_positions)
        if p is not None:
            msg = f"logit_positions{{idx}} = {{val}} is not a position of T = {shape[1]} tokens"
            _first_bad(p, (p < 0) | (p >= shape[1]), ValueError, msg)
    if intervention is not None:
        check_intervention(intervention, config)


def generate_inputs(
    params: Any,
    config: Any,
    tokens: Any,
    *,
    max_new_tokens: int,
    attention_mask: Any = None,
    intervention: Any = None,
    temperature: Any = 0.0,
    rng: Any = None,
) -> None:
    """The checks of `emojax.generate`'s arguments (see the module docstring for when)."""
    del params
    check_tokens(tokens, config.vocab_size)
    if attention_mask is not None:
        check_attention_mask(attention_mask, _shape(tokens))
    check_count(max_new_tokens, name="max_new_tokens")
    check_sampling(temperature, rng)
    if intervention is not None:
        check_intervention(intervention, config)


def validated(check: Callable[..., None]) -> Callable[[Callable], Callable]:
    """Decorates a jitted entry point so that `check(*args, **kwargs)` runs before it.

    The check runs outside the compiled program (so concrete inputs can be read); the
    returned function keeps the jitted one's `lower`, `trace`, `eval_shape` and
    `clear_cache`, and the jitted function itself is `.unchecked`.
    """

    def decorate(jitted: Callable) -> Callable:
        @functools.wraps(jitted)
        def entry(*args, **kwargs):
            check(*args, **kwargs)
            return jitted(*args, **kwargs)

        for attr in ("lower", "trace", "eval_shape", "clear_cache"):
            if hasattr(jitted, attr):
                setattr(entry, attr, getattr(jitted, attr))
        entry.unchecked = jitted
        return entry

    return decorate


# Arguments of forward/generate that are Python values (static under jit), not arrays.
_STATIC = ("start_layer", "return_logits", "capture", "max_new_tokens")


@contextlib.contextmanager
def _checkify_mode():
    token = _CHECKIFY.set(True)
    try:
        yield
    finally:
        _CHECKIFY.reset(token)


def checkified(entry: Callable, params: Any, config: Any, tokens: Any, kwargs: dict) -> Any:
    """`entry(params, config, tokens, **kwargs)` with its value checks as checkify checks.

    What `emojax.checked_forward` / `emojax.checked_generate` run (they live beside
    `forward` and `generate`, which this module does not import).

    Returns:
      `(err, entry's output)`.
    """
    static = {k: kwargs.pop(k) for k in _STATIC if k in kwargs}

    def run(params, tokens, kwargs):
        with _checkify_mode():
            return entry(params, config, tokens, **static, **kwargs)

    return checkify.checkify(run, errors=checkify.user_checks)(params, tokens, kwargs)


def check_token_ids(ids: Any, vocab_size: int, *, name: str) -> None:
    """A sequence of token ids (e.g. `refusal_ids`, one prompt) in [0, vocab_size)."""
    ids = np.asarray(ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got {ids.dtype}")
    bad = ((ids < 0) | (ids >= vocab_size)).reshape(-1)
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(
            f"{name}[{j}] = {ids.reshape(-1)[j]} is not a token id of this model "
            f"(vocab_size {vocab_size})"
        )


def check_prompts(prompts: Sequence[Any], vocab_size: int, *, name: str) -> None:
    """Token-id lists (or `Prompt`s with `.tokens`), each checked by `check_token_ids`."""
    for i, p in enumerate(prompts):
        check_token_ids(getattr(p, "tokens", p), vocab_size, name=f"{name}[{i}]")


def capture_inputs(config: Any, contrast_sets: Sequence[Any], neutral: Sequence[Any]) -> None:
    """`emojax.extract.capture`'s prompts: token ids of this model (the capture is jitted)."""
    for cs in contrast_sets:
        for side in ("positive", "negative"):
            check_prompts(getattr(cs, side), config.vocab_size, name=f"{cs.concept}.{side}")
    check_prompts(neutral, config.vocab_size, name="neutral")


def refusal_inputs(
    config: Any, vectors: Any, harmful: Any, harmless: Any, refusal_ids: Sequence[int]
) -> None:
    """`emojax.extract.select_refusal_layer`'s inputs: prompts, vectors [L + 1, D], ids."""
    for name, (tokens, mask) in (("harmful", harmful), ("harmless", harmless)):
        check_tokens(tokens, config.vocab_size, name=f"{name} tokens")
        check_attention_mask(mask, _shape(tokens), name=f"{name} mask")
    check_width(vectors, config.d_model, name="vectors")
    check_finite(vectors, "vectors", what="(indices: site, d)")
    check_token_ids(refusal_ids, config.vocab_size, name="refusal_ids")


def sweep_inputs(model_config: Any, vectors: Any, prompts: Any, sweep_config: dict) -> None:
    """`emojax.sweep.run_sweep`'s inputs against the model, before anything runs.

    Args:
      model_config: the model's `ModelConfig`.
      vectors: the `VectorSet` (`vectors` [C, L, D], `layer_norms` [L]).
      prompts: the `SweepPrompts`.
      sweep_config: the resolved sweep settings (`emojax.sweep.default_config` keys).
    """
    vocab = model_config.vocab_size
    for name in ("tokens", "neutral_tokens"):
        check_tokens(getattr(prompts, name), vocab, name=f"prompts.{name}")
    check_attention_mask(prompts.mask, _shape(prompts.tokens), name="prompts.mask")
    check_attention_mask(
        prompts.neutral_mask, _shape(prompts.neutral_tokens), name="prompts.neutral_mask"
    )
    check_width(vectors.vectors, model_config.d_model, name="vectors.vectors")
    check_finite(vectors.vectors, "vectors.vectors", what="(indices: concept, layer, d)")
    check_finite(vectors.layer_norms, "vectors.layer_norms")
    for key in ("coefs", "joint_coefs"):
        check_finite(np.asarray(sweep_config[key], np.float64), f"sweep {key}")
    check_count(sweep_config["max_new_tokens"], name="sweep max_new_tokens", minimum=1)
