"""Chat formatting through a tokenizer's chat template.

Every member of a model family sees prompts through one template: the tuned model's. A base
model usually has none, so callers pass `template_source` (the instruct model's tokenizer, its
checkpoint directory, or the Jinja template string) for every member of the family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def resolve_template(tokenizer: Any, template_source: Any = None) -> str:
    """Returns the Jinja chat template to use for `tokenizer`.

    Args:
      tokenizer: a transformers tokenizer.
      template_source: None (use the tokenizer's own template), another tokenizer, a checkpoint
        directory / tokenizer_config.json path, or a Jinja template string.

    Raises:
      ValueError: when no template can be found.
    """
    src = tokenizer if template_source is None else template_source
    template = None
    if isinstance(src, str | Path) and not (isinstance(src, str) and "{%" in src):
        path = Path(src)
        jinja = path / "chat_template.jinja" if path.is_dir() else None
        cfg = path / "tokenizer_config.json" if path.is_dir() else path
        if jinja is not None and jinja.exists():
            template = jinja.read_text()
        elif cfg.exists():
            template = json.loads(cfg.read_text()).get("chat_template")
    elif isinstance(src, str):
        template = src
    else:
        template = getattr(src, "chat_template", None)
    if isinstance(template, dict):  # several named templates: use the default one
        template = template.get("default")
    if not template:
        raise ValueError(
            "no chat template found; for a base model pass template_source= the tuned model's "
            "tokenizer (or its checkpoint directory)"
        )
    return template


def format_chat(
    tokenizer: Any,
    user_text: str,
    template_source: Any = None,
    *,
    system: str | None = None,
    assistant_prefix: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Renders one user turn through the chat template (the string, not token ids).

    Args:
      tokenizer: a transformers tokenizer.
      user_text: the user message.
      template_source: see `resolve_template` (the tuned model's template for a whole family).
      system: optional system message.
      assistant_prefix: text appended after the generation prompt (e.g. a forced response start).
      add_generation_prompt: end with the assistant header.
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_text}
    ]
    text = tokenizer.apply_chat_template(
        messages,
        chat_template=resolve_template(tokenizer, template_source),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return text + assistant_prefix


def encode_chat(
    tokenizer: Any,
    user_texts: list[str],
    template_source: Any = None,
    *,
    pad_to: int | None = None,
    system: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Formats and tokenizes prompts, left-padded for generation.

    Args:
      tokenizer: a transformers tokenizer.
      user_texts: N user messages.
      template_source: see `resolve_template`.
      pad_to: pad every row to this length (a fixed T avoids recompiles); default: longest.
      system: optional system message.

    Returns:
      tokens int32 [N, T] and attention_mask int32 [N, T] (1 = real token), left padded.
    """
    ids = [
        tokenizer.encode(
            format_chat(tokenizer, t, template_source, system=system), add_special_tokens=False
        )
        for t in user_texts
    ]
    return left_pad(ids, pad_id=_pad_id(tokenizer), pad_to=pad_to)


def left_pad(
    ids: list[list[int]], pad_id: int = 0, pad_to: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads token id lists into tokens / attention_mask int32 [N, T]."""
    T = max(len(x) for x in ids) if pad_to is None else pad_to
    if any(len(x) > T for x in ids):
        raise ValueError(f"a prompt has more than pad_to={T} tokens")
    tokens = np.full((len(ids), T), pad_id, np.int32)
    mask = np.zeros((len(ids), T), np.int32)
    for i, x in enumerate(ids):
        if x:
            tokens[i, T - len(x) :] = x
            mask[i, T - len(x) :] = 1
    return tokens, mask


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0
