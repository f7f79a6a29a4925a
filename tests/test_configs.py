"""Config files: every override the docs show parses, no list fields, unknown variants raise.

The overrides are read from README.md and docs/*.md (fenced code blocks, with `\\`
continuations joined, and inline code spans) and from the config files' own docstrings, then
parsed by ml_collections' `config_flags` exactly as the scripts do (`lock_config=True`) against
the config file the command names (`configs/zoo.py`, every script's default, otherwise).
"""

from __future__ import annotations

import ast
import glob
import os
import re
import runpy
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs", "[!_]*.py"))
)
DEFAULT_CONFIG = "configs/zoo.py"  # every script's default --config
DOC_FILES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)
# The docs' generic pattern, not a command: "any field overridable as --config.section.field".
PLACEHOLDERS = {"--config.section.field=value"}
# Overrides the docs show as user errors (docs/outputs.md, "Errors"): each must fail to parse.
DOCUMENTED_ERRORS = {"--config.breakpoint.alpha=1", "--config.breakpoint.kappa=abc"}


def _joined(lines: list[str]) -> list[str]:
    """Lines with shell `\\` continuations joined into one command each."""
    out, parts = [], []
    for line in lines:
        parts.append(line.strip().removesuffix("\\").strip())
        if not line.rstrip().endswith("\\"):
            out.append(" ".join(parts))
            parts = []
    return out + ([" ".join(parts)] if parts else [])


def _commands(text: str, *, markdown: bool) -> list[str]:
    """Commands with `--config.` overrides: markdown code blocks and inline code spans, or
    every line of a docstring."""
    if not markdown:
        return [c for c in _joined(text.splitlines()) if "--config." in c]
    code, out, in_code = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif in_code:
            code.append(line)
        else:  # an inline span starting "error:" is a script's output, not a command
            out += [s for s in re.findall(r"`([^`]*--config\.[^`]*)`", line)
                    if not s.startswith("error:")]  # fmt: skip
    return [c for c in _joined(code) + out if "--config." in c]


def _overrides() -> list[tuple[str, str, tuple[str, ...]]]:
    """(where, config file[:arg], overrides) for every command that overrides a field."""
    sources = {path: open(os.path.join(ROOT, path), encoding="utf-8").read() for path in DOC_FILES}
    for path in CONFIG_FILES:
        sources[path] = ast.get_docstring(ast.parse(open(os.path.join(ROOT, path)).read()))
    found = []
    for where, text in sources.items():
        for cmd in _commands(text, markdown=where.endswith(".md")):
            tokens = shlex.split(cmd, comments=True)
            overrides = tuple(
                t
                for t in tokens
                if t.startswith("--config.")
                and "=" in t
                and t not in PLACEHOLDERS | DOCUMENTED_ERRORS
            )
            config = next(
                (t.split("=", 1)[1] for t in tokens if t.startswith("--config=")), DEFAULT_CONFIG
            )
            if overrides:
                found.append((where, config, overrides))
    return found


OVERRIDES = _overrides()


def _parse(config: str, overrides: tuple[str, ...]):
    """`--config=<config> <overrides>` through config_flags, as the scripts parse it."""
    path, _, arg = config.partition(":")
    argv = ["prog", f"--config={os.path.join(ROOT, path)}" + (f":{arg}" if arg else ""),
            *overrides]  # fmt: skip
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", argv[1].split("=", 1)[1], "", flag_values=fv, lock_config=True, sys_argv=argv
    )
    fv(argv)
    return fv.config


def _expected(value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def test_the_docs_show_the_overrides_they_are_checked_on():
    """The grep finds the overrides of README.md and docs/ (an empty grep would pass everything
    below)."""
    shown = {o for where, _, ovs in OVERRIDES if where.endswith(".md") for o in ovs}
    keys = {o.split("=", 1)[0] for o in shown}
    assert len(shown) >= 8
    assert {"--config.breakpoint.models", "--config.breakpoint.labels", "--config.mesh.model",
            "--config.zoo.scenario", "--config.sweep.coefs", "--config.validation.scenario",
            "--config.breakpoint.preflight_only"} <= keys  # fmt: skip
    assert any(where == "README.md" for where, _, _ in OVERRIDES)
    assert {where for where, _, _ in OVERRIDES if where.startswith("docs/")} >= {
        "docs/real_model.md",
        "docs/validation.md",
        "docs/scale_out.md",
    }


@pytest.mark.parametrize("override", sorted(DOCUMENTED_ERRORS))
def test_the_documented_errors_are_errors(override):
    """The wrong overrides docs/outputs.md shows as errors are shown there and fail to parse."""
    assert override in open(os.path.join(ROOT, "docs", "outputs.md"), encoding="utf-8").read()
    with pytest.raises(Exception):  # noqa: B017 - a KeyError or a flags error, as in the scripts
        _parse(DEFAULT_CONFIG, (override,))


@pytest.mark.parametrize(
    "where,config,overrides", OVERRIDES, ids=[f"{w}:{' '.join(o)}" for w, _, o in OVERRIDES]
)
def test_every_documented_override_parses(where, config, overrides):
    cfg = _parse(config, overrides)
    for override in overrides:
        key, _, value = override[len("--config.") :].partition("=")
        got = cfg
        for part in key.split("."):
            got = got[part]
        assert got == _expected(value), (where, override)


def test_a_tuple_override_replaces_the_model_list():
    cfg = _parse(
        "configs/llama31_8b.py",
        ('--config.breakpoint.models=("/ckpt/base", "/ckpt/instruct", "/ckpt/safety")',
         '--config.breakpoint.labels=("base", "instruct", "safety")'),
    )  # fmt: skip
    assert cfg.breakpoint.models == ("/ckpt/base", "/ckpt/instruct", "/ckpt/safety")
    assert cfg.breakpoint.labels == ("base", "instruct", "safety")
    cfg = _parse("configs/zoo.py:smoke", ('--config.breakpoint.models=("/only",)',))
    assert cfg.breakpoint.models == ("/only",) and cfg.zoo.smoke


def _variants(path: str) -> tuple[str, ...]:
    return (
        ("", "smoke", "validation")
        if path.endswith("zoo.py")
        else ("", "smoke", "dial", "smoke,dial")
    )


def _get_config(path: str):
    return runpy.run_path(os.path.join(ROOT, path))["get_config"]


def _lists(d, prefix="") -> list[str]:
    out = []
    for k, v in d.items():
        if hasattr(v, "items"):
            out += _lists(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            out.append(prefix + k)
    return out


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_no_list_fields(path):
    """List fields cannot be overridden from the command line; every sequence is a tuple."""
    for arg in _variants(path):
        cfg = _get_config(path)(arg)
        assert _lists(cfg) == [], (path, arg)
        assert isinstance(cfg.breakpoint.models, tuple)


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_unknown_variant_raises_naming_the_valid_ones(path):
    get_config = _get_config(path)
    with pytest.raises(ValueError, match=r"'smok'.*'smoke'"):
        get_config("smok")
    smoke = get_config("smoke")  # the valid variants still build, and differ from the default
    assert smoke.breakpoint.num_null < get_config("").breakpoint.num_null


def test_code_that_extends_the_model_list_still_works():
    from configs.zoo import get_config

    cfg = get_config("smoke")
    cfg.breakpoint.models = ["/a", "/b"]  # a list assigned in Python becomes the field's tuple
    assert cfg.breakpoint.models == ("/a", "/b")
    cfg.breakpoint.models += ("/c",)
    cfg.breakpoint.labels = [*cfg.breakpoint.models, "/d"][:3]
    assert cfg.breakpoint.models == ("/a", "/b", "/c") == cfg.breakpoint.labels
