"""The work directory contract: one config per directory, resumed or refused, never mixed.

A run's work directory holds the outputs of one resolved config:

* `run.json` is written before any other output: the config and its fingerprint (a hash of
  the resolved config without `workdir`). `summary.json`, written last by `emojax.report`,
  carries the same fingerprint and marks the run complete. Every file is published atomically
  (`emojax.results.atomic_write`).
* `check_workdir` (read-only) decides what a new run may do there: start fresh (an absent or
  empty directory), resume (the same fingerprint: finished per-point outputs are reused), or
  refuse, before anything is written, when the directory holds another config's outputs (or
  files of no run at all); the error names the differing keys and the `--overwrite` flag.
  `claim_workdir` runs it on process 0 and shares the verdict with every process.
* With `overwrite=True`, `start_run` first moves the old outputs aside into
  `<workdir>/previous-<timestamp>/`, so they are kept whole and never mixed with the new ones.
* Scripts other than the pipeline key their work directory on `script_config` (the config
  plus the script's own flags), claim it with `start_on_writer`, and run under `run_main`:
  a user error (`is_user_error`: a bad workdir, checkpoint, dataset, config or argument)
  prints one line, `error: <message>`, and exits 2; any other exception keeps its traceback.
* So does every config error met while the flags are parsed (`_parse_flags`): a bad flag
  value, a missing config file (`configs/smollm2` suggests `configs/smollm2.py`), a
  directory, an unknown `get_config` variant, an unknown key (`--config.breakpoint.alpha`
  names `breakpoint.alphas`). Scripts define their config flag with `define_config_file`,
  which keeps the errors ml_collections raises at import for `run_main` to report.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

if TYPE_CHECKING:
    from absl import flags

MARKER = "run.json"  # written first: the config and its fingerprint
SUMMARY = "summary.json"  # written last: the completion marker
PREVIOUS_PREFIX = "previous-"  # old outputs moved aside by overwrite=True
EXCLUDED_KEYS = ("workdir", "overwrite")  # where a run writes is not what it computes
# The repository holding emojax (and configs/): where a mistyped relative --config is looked
# up for a suggestion.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkdirError(ValueError):
    """A work directory holds outputs that a run of this config must not mix with."""


def resolved_config(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON values (tuples as lists), without `EXCLUDED_KEYS`."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    d = json.loads(json.dumps(d, sort_keys=True, default=str))
    return {k: v for k, v in d.items() if k not in EXCLUDED_KEYS}


def _fingerprint(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_fingerprint(cfg: Any) -> str:
    """A 16-hex-digit hash of the resolved config (every key but `EXCLUDED_KEYS`)."""
    return _fingerprint(resolved_config(cfg))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, as "key: old -> new"."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = lambda v: "(absent)" if v is missing else _short(json.dumps(v))
            out.append(f"{key}: {show(va)} -> {show(vb)}")
    return out


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclasses.dataclass(frozen=True)
class WorkdirState:
    """What a run may do in its work directory (`check_workdir`).

    Attributes:
      path: the work directory (absolute).
      action: "fresh" (absent or empty), "resume" (same config) or "overwrite" (other
        outputs, to be moved aside by `start_run`).
      fingerprint: the new run's config fingerprint.
      config: the new run's resolved config.
      differing: for "overwrite", the keys in which the old outputs' config differs.
    """

    path: str
    action: str
    fingerprint: str
    config: dict[str, Any]
    differing: tuple[str, ...] = ()


def _outputs(path: str) -> list[str]:
    """The directory's entries, except the old outputs moved aside by earlier overwrites."""
    return sorted(e for e in os.listdir(path) if not e.startswith(PREVIOUS_PREFIX))


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            out = json.load(f)
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def stored_config(path: str) -> dict[str, Any] | None:
    """The resolved config of the outputs in `path`: from `run.json`, else from the provenance
    in `config.json` (outputs of runs before `run.json` existed); None if neither holds one."""
    marker = _read_json(os.path.join(path, MARKER))
    if marker is not None and isinstance(marker.get("config"), dict):
        return marker["config"]
    prov = _read_json(os.path.join(path, "config.json"))
    if prov is not None and isinstance(prov.get("config"), dict):
        return {k: v for k, v in prov["config"].items() if k not in EXCLUDED_KEYS}
    return None


def check_workdir(path: str, cfg: Any, *, overwrite: bool = False) -> WorkdirState:
    """Decides, without writing anything, whether a run of `cfg` may use `path`.

    Args:
      path: the work directory.
      cfg: the run's resolved config (a ConfigDict or a mapping).
      overwrite: allow a run of another config: its outputs will be moved aside.

    Returns:
      The `WorkdirState` to pass to `start_run`.

    Raises:
      WorkdirError: `path` holds another config's outputs (naming the differing keys) or
        files of no emojax run, and `overwrite` is False; or `path` is a file.
    """
    path = os.path.abspath(os.path.expanduser(path))
    config = resolved_config(cfg)
    fingerprint = _fingerprint(config)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"work directory {path} is a file")
    if not os.path.isdir(path) or not _outputs(path):
        return WorkdirState(path, "fresh", fingerprint, config)
    old = stored_config(path)
    if old is not None and _fingerprint(old) == fingerprint:
        return WorkdirState(path, "resume", fingerprint, config)
    differing = tuple(config_diff(old, config)) if old is not None else ()
    if overwrite:
        return WorkdirState(path, "overwrite", fingerprint, config, differing)
    if old is None:
        entries = _outputs(path)
        what = (
            f"files of no emojax run (no {MARKER} or config.json with a config: "
            f"{', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''})"
        )
    else:
        keys = "; ".join(differing[:12]) + (
            f"; and {len(differing) - 12} more" if len(differing) > 12 else ""
        )
        what = f"the outputs of a different config (fingerprint {_fingerprint(old)}, this run "
        what += f"{fingerprint}; differing keys: {keys})"
    raise WorkdirError(
        f"work directory {path} holds {what}. Nothing was written. Pass --overwrite to move "
        f"the old outputs into {path}/{PREVIOUS_PREFIX}<timestamp>/ and start afresh, or "
        "choose another --workdir."
    )


def move_aside(path: str, *, stamp: str | None = None) -> str:
    """Moves every output of `path` (not earlier `previous-*` folders) into a new
    `path/previous-<stamp>/`; returns that folder.

    The marker (`run.json`) moves last, so an interrupted move leaves the rest still marked
    as the old config's outputs (refused again, or moved aside by the next overwrite).
    """
    stamp = stamp or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest, n = os.path.join(path, PREVIOUS_PREFIX + stamp), 1
    while os.path.exists(dest):
        dest, n = os.path.join(path, f"{PREVIOUS_PREFIX}{stamp}-{n}"), n + 1
    entries = _outputs(path)
    os.makedirs(dest)
    for name in sorted(entries, key=lambda e: e == MARKER):
        os.replace(os.path.join(path, name), os.path.join(dest, name))
    return dest


def start_run(state: WorkdirState) -> str | None:
    """Claims the work directory for the run `state` was checked for.

    Moves the old outputs aside for "overwrite", creates the directory and writes `run.json`
    (kept as it is on "resume"). Returns the `previous-*` folder the old outputs went to, or
    None.
    """
    from emojax import results

    previous = move_aside(state.path) if state.action == "overwrite" else None
    os.makedirs(state.path, exist_ok=True)
    marker = os.path.join(state.path, MARKER)
    if state.action != "resume" or not os.path.isfile(marker):
        results.write_json(
            marker,
            {
                "fingerprint": state.fingerprint,
                "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "config": state.config,
            },
        )
    return previous


def script_config(cfg: Any, script: str, **flags: Any) -> dict[str, Any]:
    """What a script's outputs depend on: the resolved config and the script's own flags.

    A sweep of `--model=base` into a directory holding the sweep of `--model=instruct` is
    another run, although the config is the same: the flags go under the key "script" (with
    the script's name), so `check_workdir` refuses it and names `script.model`.

    Args:
      cfg: the run's config (a ConfigDict or a mapping).
      script: the script's name, e.g. "sweep".
      **flags: the flags that change what is computed (not `--workdir` or `--overwrite`).

    Returns:
      A mapping to pass to `check_workdir` (or `claim_workdir`) as the config.
    """
    return {**resolved_config(cfg), "script": {"name": script, **flags}}


def start_on_writer(state: WorkdirState) -> str | None:
    """`start_run` on the process that writes (process 0 of a multi-host run), logged; every
    process waits for it. Returns the `previous-*` folder the old outputs went to, or None."""
    from absl import logging

    from emojax import sharding

    previous = None
    if sharding.is_writer():
        previous = start_run(state)
        if previous:
            logging.info("moved the old outputs of %s aside into %s", state.path, previous)
        logging.info("work directory %s (%s, config %s)", state.path, state.action,
                     state.fingerprint)  # fmt: skip
    sharding.sync("workdir claimed")
    return previous


def claim_workdir(cfg, workdir: str, *, overwrite: bool = False) -> WorkdirState:
    """`check_workdir` on process 0, its verdict shared with every process."""
    from emojax import sharding

    state, error = None, None
    if sharding.is_writer():
        try:
            state = check_workdir(workdir, cfg, overwrite=overwrite)
        except WorkdirError as e:
            error = e
    refused = bool(sharding.broadcast_from_writer(np.asarray(error is not None, np.int32)))
    if error is not None:
        raise error
    if refused:
        raise WorkdirError(f"process 0 refused the work directory {workdir} (see its log)")
    return state


def user_error_types() -> tuple[type[BaseException], ...]:
    """The library's named errors about what a user gave it (not bugs).

    `WorkdirError`, `CheckpointError` (and `GGUFError`), `ConfigError`, `DatasetError`,
    `DialError`, and `FileNotFoundError` (a missing checkpoint, data file or vector directory;
    `ModelFetchError` is one).
    """
    from emojax.breakpoint import DialError
    from emojax.concepts.schema import DatasetError
    from emojax.config import ConfigError
    from emojax.loading import CheckpointError
    from emojax.models import ModelFetchError

    return (WorkdirError, CheckpointError, ConfigError, DatasetError, DialError,
            ModelFetchError, FileNotFoundError)  # fmt: skip


# Where a ValueError / TypeError / IndexError is a check of an argument or a config setting,
# not a bug: module -> the checking functions (None: every function of the module).
CHECKS: dict[str, tuple[str, ...] | None] = {
    "emojax.validate": None,
    "emojax.sweep.conditions": ("_resolve_config",),  # unknown keys, joint_random > num_random
    "emojax.pipeline.axis": ("axis_checkpoints",),  # unknown axis, labels not matching models
}


def is_user_error(error: BaseException) -> bool:
    """Whether `error` reports bad user input: one of `user_error_types()`, or a `ValueError`,
    `TypeError` or `IndexError` raised directly by a check in `CHECKS` (every `emojax.validate`
    check names the argument and its bad value). Anything else is treated as a bug."""
    if isinstance(error, user_error_types()):
        return True
    if not isinstance(error, ValueError | TypeError | IndexError):
        return False
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    module = tb.tb_frame.f_globals.get("__name__")
    if module not in CHECKS:
        return False
    functions = CHECKS[module]
    return functions is None or tb.tb_frame.f_code.co_name in functions


def error_line(error: BaseException) -> str:
    """`error`'s message on one line, its notes (e.g. which axis checkpoint) appended."""
    text = " ".join(s.strip() for s in str(error).splitlines() if s.strip())
    text = text or type(error).__name__
    notes = [n.strip() for n in getattr(error, "__notes__", ()) if n.strip()]
    return f"{text} ({'; '.join(notes)})" if notes else text


def main_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a script's main: a user error (`is_user_error`) prints `error: <message>`
    on one line to stderr and exits with status 2; other exceptions propagate unchanged
    (with their traceback)."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is a user error
            if not is_user_error(e):
                raise
            sys.stdout.flush()
            sys.stderr.write(f"error: {error_line(e)}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    return wrapped


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


def flag_error_line(message: str) -> str:
    """A flag parsing error on one line. A config file's `get_config` error arrives as the
    flag and a whole traceback (ml_collections): only the flag and the exception are kept."""
    lines = [s.strip() for s in message.splitlines() if s.strip()]
    if not any(s.startswith("Traceback (most recent call last)") for s in lines):
        return " ".join(lines)
    last = max(i for i, s in enumerate(lines) if _EXCEPTION_LINE.match(s) or i == 0)
    head = lines[0].replace("Error whilst parsing config file:", "").strip()
    return " ".join([head, *lines[last:]]) if last > 0 else head


def config_file_problem(argument: str) -> str | None:
    """Why `--config=<argument>` names no config file, or None if it names one.

    A path that is missing or a directory; the message says what a relative path was
    resolved against and suggests the file the user probably meant (`configs/smollm2` ->
    `configs/smollm2.py`, also under the repository when run from elsewhere).

    Args:
      argument: the flag's value, `path` or `path:variant`.
    """
    path, colon, variant = argument.partition(":")
    if os.path.isfile(path):
        return None
    if not path:
        return "no config file given"
    if os.path.isdir(path):
        return f"config file {path!r} is a directory, not a config file"
    where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
    names = [path] if path.endswith(".py") else [path, path + ".py"]
    roots = [""] if os.path.isabs(path) else ["", REPO_ROOT]
    guesses = (os.path.join(root, name) for root in roots for name in names)
    found = next((g for g in guesses if os.path.isfile(g)), None)
    hint = f"; did you mean {found}{colon}{variant}?" if found else ""
    return f"config file {path!r} does not exist{where}{hint}"


def define_config_file(name: str, default: str, help_string: str) -> flags.FlagHolder:
    """`config_flags.DEFINE_config_file(name, default, help_string, lock_config=True)` whose
    user errors wait for `run_main`.

    Without `--<name>=` on the command line, ml_collections loads `default` and resolves the
    `--<name>.<key>` overrides when the flag is defined, at import: an unknown key would
    raise there, before `run_main` can report it. Here such an error (and a missing default
    file) is kept on the flag, and `run_main` reports it as one `error:` line; the flag is
    then defined without the overrides. A bug in the config file keeps its traceback.

    Args:
      name: the flag's name ("config").
      default: the default config file; pass an absolute path (e.g. relative to the
        script's own file) so that the script works from any directory.
      help_string: the flag's help.

    Returns:
      The flag's `FlagHolder`.
    """
    from absl import flags
    from ml_collections import config_flags

    try:
        return config_flags.DEFINE_config_file(name, default, help_string, lock_config=True)
    except flags.Error as e:  # e.g. an override of a field that is None in the config
        problem = flag_error_line(str(e))
    except Exception:  # noqa: BLE001 - re-raised unless it is a user error
        problem = config_file_problem(default)
        problem = f"flag --{name}={default}: {problem}" if problem else None
        problem = problem or _override_problem(name, default, sys.argv)
        if problem is None:
            raise
    holder = config_flags.DEFINE_config_file(
        name, default, help_string, lock_config=True, sys_argv=sys.argv[:1]
    )
    flags.FLAGS[name].deferred_error = problem
    return holder


def _config_file_flags() -> list[str]:
    """Names of the defined config-file flags (`config_flags.DEFINE_config_file`)."""
    from absl import flags
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    return [n for n in flags.FLAGS if isinstance(flags.FLAGS[n].parser, ConfigFileFlagParser)]


def _flag_argument(argv: Sequence[str], name: str) -> str | None:
    """The value given to `--name` in `argv` (the last one, as absl takes it), or None."""
    value, args = None, list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        m = re.fullmatch(rf"--?{re.escape(name)}(?:=(.*))?", arg, re.DOTALL)
        if m and m.group(1) is not None:
            value = m.group(1)
        elif m and i + 1 < len(args):
            value = args[i + 1]
    return value


def _override_problem(name: str, argument: str, argv: Sequence[str]) -> str | None:
    """The first `--name.<key>` override in `argv` whose key the config `argument` lacks,
    as "flag --name.<key>: ..." (with the closest existing key); None if every key exists
    or the config does not load (then the caller's error is not about an override)."""
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    try:
        config = ConfigFileFlagParser(name, lock_config=False).parse(argument)
    except Exception:  # noqa: BLE001 - not loadable: the error is not an override's
        return None
    if _error_config_problem(name, config):
        return None
    pattern = re.compile(rf"-{{1,2}}(?:no)?{re.escape(name)}\.([^=]+)")
    for arg in argv[1:]:
        m = pattern.match(arg)
        key = m.group(1) if m else None
        problem = key and _missing_key(config, key.split("."))
        if problem:
            return f"flag --{name}.{key}: {problem}"
    return None


def _missing_key(config: Any, parts: list[str]) -> str | None:
    """Why the dotted key `parts` is not a field of `config` (None if it is)."""
    node = config
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if "[" in part:  # an index into a tuple field: left to ml_collections
            return None
        if dataclasses.is_dataclass(node):
            keys = [f.name for f in dataclasses.fields(node)]
        elif callable(getattr(node, "keys", None)):
            keys = list(node.keys())
        else:
            return f"{where!r} is {_short(repr(node))}, not a section of the config"
        if part not in keys:
            close = difflib.get_close_matches(part, keys, n=1)
            section = f"section {where!r}" if where else "the config"
            hint = (f"did you mean {'.'.join([*parts[:i], close[0]])!r}?" if close
                    else f"its keys: {', '.join(sorted(keys))}")  # fmt: skip
            return f"{section} has no key {part!r} ({hint})"
        node = getattr(node, part) if dataclasses.is_dataclass(node) else node[part]
    return None


def _error_config_problem(name: str, value: Any) -> str | None:
    """The load error of a config flag whose file could not be read (ml_collections keeps it
    in a placeholder that raises on first use), as one line; None for a loaded config."""
    from ml_collections.config_flags import config_flags  # the implementation module

    error_config = getattr(config_flags, "_ErrorConfig", None)
    if error_config is None or not isinstance(value, error_config):
        return None
    error = object.__getattribute__(value, "_error")
    return f"flag --{name}: {error_line(error)}"


def _parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing with every config error reported as one `error:` line, exit 2:
    a bad flag value, a missing or wrong config file, an unknown config key (also one met
    when the flag was defined, `define_config_file`), an unknown `get_config` variant."""
    from absl import flags

    def fail(line: str) -> NoReturn:
        sys.stderr.write(f"error: {line}\n")
        sys.stderr.flush()
        raise SystemExit(2)

    names = _config_file_flags()
    for name in names:
        if deferred := getattr(flags.FLAGS[name], "deferred_error", None):
            fail(deferred)
        given = _flag_argument(argv, name)
        if given is not None and (problem := config_file_problem(given)):
            fail(f"flag --{name}={given}: {problem}")
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(flag_error_line(str(e)))
    except Exception:  # noqa: BLE001 - re-raised unless an override names a missing key
        for name in names:
            given = _flag_argument(argv, name)
            argument = given or getattr(flags.FLAGS[name], "default_unparsed", None)
            if problem := _override_problem(name, argument, argv):
                fail(problem)
        raise
    for name in names:
        if problem := _error_config_problem(name, flags.FLAGS[name].value):
            fail(problem)
    return rest


def run_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
    """`absl.app.run(main)` for emojax scripts: a bad flag or config (an unknown `get_config`
    variant, an override that does not parse) and a user error raised by `main`
    (`main_errors`) each print one line, `error: <message>`, and exit with status 2. The
    persistent compilation cache (`emojax.compile_cache`; EMOJAX_COMPILATION_CACHE=0: off) is
    on while main runs."""
    from absl import app

    from emojax.compile_cache import enabled  # the persistent compilation cache, before main

    app.run(
        main_errors(enabled(main)),
        argv=None if argv is None else list(argv),
        flags_parser=_parse_flags,
    )
