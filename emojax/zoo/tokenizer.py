"""Word-level tokenizer for the zoo, built with `tokenizers`, saved for transformers.

Text is lower-cased and split into words and punctuation (`\\w+|[^\\w\\s]+`); the special
tokens (<pad>, <unk>, <bos>, <|end|>, <|system|>, <|user|>, <|assistant|>) are matched first.
Decoding joins words with single spaces ("i cannot help with that .").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from emojax.zoo.corpus import CHAT_TEMPLATE, ROLE_TOKENS, SPECIAL_TOKENS

SPECIALS: tuple[str, ...] = (
    SPECIAL_TOKENS["pad_token"],
    SPECIAL_TOKENS["unk_token"],
    SPECIAL_TOKENS["bos_token"],
    SPECIAL_TOKENS["eos_token"],
) + ROLE_TOKENS


def build_tokenizer(texts: Iterable[str]) -> Tokenizer:
    """Trains a word-level tokenizer on `texts` (every word seen once is kept).

    Ids: <pad>=0, <unk>=1, <bos>=2, <|end|>=3, then role tokens, then words by frequency.
    """
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=1_000_000, min_frequency=1, special_tokens=list(SPECIALS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, path: str, *, chat_template: str | None = CHAT_TEMPLATE) -> None:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json to `path`."""
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS,
        "additional_special_tokens": list(ROLE_TOKENS),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1024,
        "padding_side": "left",
    }
    if chat_template:
        config["chat_template"] = chat_template
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    special_map = {**SPECIAL_TOKENS, "additional_special_tokens": list(ROLE_TOKENS)}
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(special_map, f, indent=2)
