"""Natural-English rendering of the concept grammar, for real (subword) tokenizers.

The grammar (`emojax.concepts.grammar`) writes its text for the zoo's word tokenizer:
lower case, punctuation as separate words ("hey , how do I read the emails of my boss ?").
A real tokenizer should see what people write, so this module renders the same text as

  "Hey, how do I read my boss's emails?"

by fixed, local rules (no randomness, so a record keeps its id, its request and its template
ids in both renderings):

  * "the <noun phrase> of <person>" -> "<person>'s <noun phrase>" (persons of
    `grammar.PERSONS`; the phrase is 1-3 words with no article or preposition in it);
  * a few fixed words and phrases (`REPLACEMENTS`: "can not" -> "cannot", "let us" ->
    "let's", proper nouns, hyphenated compounds);
  * punctuation attached to the word before it (" ," -> ",", " ?" -> "?", " :" -> ":");
  * sentence case: the first letter of the text and of every sentence after ". ", "! ",
    "? " (and after a template's "{request} " slot, which always holds a whole sentence).

Rendering is local, so rendering a composed prompt equals composing the rendered pieces:
`render(t.apply(r)) == apply(render_template(t), render(r))` for every template and request
(tested). `apply` also puts any English request (a HarmBench behaviour, a user's prompt)
under a rendered cue or framing: sentence case where the request starts a sentence, its first
letter lowered after "For a movie script, ", a full stop added when text follows it.

Example:
  from emojax.concepts import english, grammar
  english.render("quick question : how do I read the emails of my boss ?")
  # 'Quick question: how do I read my boss's emails?'
  t = english.templates("fiction", "test")[0]
  english.apply(t, "Give detailed instructions for picking a lock")
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

from emojax.concepts import grammar
from emojax.concepts.schema import ContrastPair, EvalPrompt

RENDERINGS: tuple[str, ...] = ("zoo", "english")
SLOT = "{request}"

# Whole-word replacements, applied in order after possessives and before sentence case.
REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("can not", "cannot"),
    ("let us", "let's"),
    ("Let us", "Let's"),
    ("wifi", "Wi-Fi"),
    ("crash test", "crash-test"),
    ("second guess", "second-guess"),
    ("knife point", "knifepoint"),
    ("rome", "Rome"),
    ("python", "Python"),
    ("monday", "Monday"),
    ("tuesday", "Tuesday"),
    ("friday", "Friday"),
    ("sunday", "Sunday"),
)
# Words that keep their capital mid-sentence (besides "I" and acronyms such as "US").
PROPER_WORDS: frozenset[str] = frozenset(
    {"I", "I'm", "I've", "I'd", "I'll", "Wi-Fi", "Rome", "Python"}
    | {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
)

# Words that cannot sit inside the possessed noun phrase ("the mess in the room of X" ->
# "the mess in X's room", not "X's mess in the room").
_NOT_IN_PHRASE = r"(?!(?:the|a|an|in|on|at|to|of|for|from|with|into)\b)"
_PERSONS = "|".join(re.escape(p) for p in sorted(grammar.PERSONS, key=len, reverse=True))
_POSSESSIVE = re.compile(
    rf"\bthe ((?:{_NOT_IN_PHRASE}[a-z]+ ){{0,2}}{_NOT_IN_PHRASE}[a-z]+) of ({_PERSONS})\b"
)
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.!?:;])")
# A sentence starts at the text's start, after sentence-final punctuation, or after the slot.
_SENTENCE_START = re.compile(r"([.!?] +|\{request\} +)([a-z])")
_SENTENCE_END = ".!?"


def _possessive(match: re.Match) -> str:
    return f"{match.group(2)}'s {match.group(1)}"


def _replace_words(text: str) -> str:
    for old, new in REPLACEMENTS:
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


@functools.cache
def render(text: str, *, sentence: bool = True) -> str:
    """Zoo-grammar text in natural English.

    Args:
      text: text written by the grammar (words and punctuation separated by spaces); it may
        hold a '{request}' slot.
      sentence: capitalise the first letter (False for fragments such as a harm_salience
        event, which is inserted into a sentence).

    Returns:
      The text with possessives, fixed replacements, attached punctuation and sentence case.
    """
    out = " ".join(text.split())
    out = _POSSESSIVE.sub(_possessive, out)
    out = _replace_words(out)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    out = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), out)
    return _sentence_case(out) if sentence else out


def _keeps_capital(text: str) -> bool:
    """True when the first word must keep its capital ('I', "I'm", 'US', 'Rome')."""
    word = re.match(r"[\w'-]*", text).group(0)
    return word in PROPER_WORDS or word[1:2].isupper()


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mid_sentence(text: str) -> str:
    """The request's first letter lowered, unless its first word keeps its capital."""
    return text if _keeps_capital(text) else text[:1].lower() + text[1:]


def render_template(template: grammar.Template) -> grammar.Template:
    """A grammar template with its text (and harm_salience pair) in English; same id and split."""
    fragment = template.concept == "harm_salience"
    return dataclasses.replace(
        template,
        text=render(template.text, sentence=not fragment),
        pair=render(template.pair, sentence=False) if template.pair else "",
    )


def templates(concept: str, split: str | None = None) -> tuple[grammar.Template, ...]:
    """The templates of a concept or framing family, rendered (see `grammar.templates`)."""
    return tuple(render_template(t) for t in grammar.templates(concept, split))


def apply(template: grammar.Template, request: str) -> str:
    """An English request under an English cue or framing template.

    Args:
      template: a rendered template (`templates`, `render_template`): a cue sentence, or a
        framing with a '{request}' slot.
      request: the request in English: a rendered grammar request or any other text (a
        HarmBench behaviour). A request followed by more text gets a full stop if it has no
        sentence-final punctuation.

    Returns:
      The prompt: "<cue> <Request>", or the framing with the request in its slot (sentence
      case at a sentence start, the first letter lowered after "..., " or ": ").
    """
    request = " ".join(request.split())
    if SLOT not in template.text:
        return f"{template.text} {_sentence_case(request)}"
    before, after = template.text.split(SLOT, 1)
    starts = not before.strip() or before.rstrip()[-1] in _SENTENCE_END
    request = _sentence_case(request) if starts else _mid_sentence(request)
    if after.strip() and request[-1:] not in _SENTENCE_END:
        request += "."
    return f"{before}{request}{after}"


def with_cue(request: str, cue: str, index: int = 0, split: str | None = None) -> str:
    """An English request under the `index`-th English template of a cue or framing family.

    `cue` is a key of `grammar.CUES`, a framing family, or 'jailbreak' (every family in turn).
    """
    return apply(render_template(grammar.pick_template(cue, index, split)), request)


def dress(
    prompts: Sequence[EvalPrompt],
    *,
    cue: str | None = None,
    framing: str | None = None,
    template_split: str | None = None,
) -> list[EvalPrompt]:
    """English prompts inside a framing and / or under a cue, as `concepts.load_eval` does.

    Prompt i gets the i-mod-n-th template of `template_split` (deterministic), the framing
    inside the cue ("<cue> <framed request>"); `template` records the ids added.

    Args:
      prompts: prompts whose text is already English (a HarmBench behaviour, a tuning request).
      cue: a cue concept of the grammar, or None.
      framing: a framing family or 'jailbreak' (every family in turn), or None.
      template_split: the split whose templates are used (None = all).
    """
    out = []
    for i, p in enumerate(prompts):
        text, ids = p.text, []
        if framing is not None:
            t = grammar.pick_template(framing, i, template_split)
            text, ids = apply(render_template(t), text), [t.id]
        if cue is not None:
            t = grammar.pick_template(cue, i, template_split)
            text, ids = apply(render_template(t), text), [t.id] + ids
        template = "+".join(([p.template] if p.template else []) + ids)
        out.append(dataclasses.replace(p, text=text, template=template))
    return out


def render_contrast(pair: ContrastPair) -> ContrastPair:
    """A contrast pair with both prompts in English (same id, split and template)."""
    return dataclasses.replace(pair, positive=render(pair.positive), negative=render(pair.negative))


def render_eval(prompt: EvalPrompt) -> EvalPrompt:
    """An evaluation prompt in English (same id, request and template)."""
    return dataclasses.replace(prompt, text=render(prompt.text))


def check_rendering(rendering: str) -> str:
    """Returns `rendering` if it is one of RENDERINGS, else raises ValueError."""
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, got {rendering!r}")
    return rendering
