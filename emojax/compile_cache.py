"""A persistent XLA compilation cache under the emojax cache root, on by default for scripts.

JAX's own persistent cache (`jax_compilation_cache_dir`): a compiled program is written to
disk keyed by its HLO, the compile options, the XLA flags and the jax / jaxlib version, and a
later process that compiles the same program (a rerun of the same config, a later axis point
with the same shapes) reads it back instead of compiling. The CPU backend supports it in
jax 0.10 (`jax._src.compilation_cache.is_cache_used`: tpu, gpu, cpu).

Scripts enable it through `emojax.workdir.run_main` (before their main runs, hence before the
first compile). The environment variable `EMOJAX_COMPILATION_CACHE` decides:

* unset or `1`: `$EMOJAX_CACHE/xla/` (default `~/.cache/emojax/xla/`);
* `0` (or `false`, `off`, `no`): off;
* any other value: that directory.

Under pytest (`PYTEST_VERSION` set, also in the script subprocesses tests start) it is off
unless the variable is set: the test suite never writes into the user's cache, and each test
compiles as a first run does.

Example:
  from emojax import compile_cache
  compile_cache.enable()  # before the first jit call; returns the directory or None
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = "EMOJAX_COMPILATION_CACHE"
OFF = ("0", "false", "off", "no")
# Every program is cached: a smoke run's cost is hundreds of programs of 0.05-1 s each, all
# under jax's default threshold of 1 s.
MIN_COMPILE_TIME_SECS = 0.0
MIN_ENTRY_SIZE_BYTES = 0
MAX_SIZE_BYTES = 4 * 2**30  # least recently used entries are evicted beyond this


def cache_dir() -> Path | None:
    """The directory `enable()` uses: from `EMOJAX_COMPILATION_CACHE`, None when off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value and value != "1":
        return Path(value).expanduser()
    if not value and os.environ.get("PYTEST_VERSION"):
        return None
    from emojax.models import cache_root  # $EMOJAX_CACHE/models

    return cache_root().parent / "xla"


def enable(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache; call it before the first compile.

    Args:
      path: the cache directory; None = `cache_dir()` (which may say off).

    Returns:
      The directory in use, or None when the cache is off or the directory cannot be made
      (then a warning says why and compiling goes on uncached).
    """
    path = Path(path) if path is not None else cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warnings.warn(f"compilation cache off: cannot create {path}: {e}", stacklevel=2)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", MIN_ENTRY_SIZE_BYTES)
    jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
    return str(path)


def enabled(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a script's main so that the cache is on (`enable()`) when it starts."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        enable()
        return main(*args, **kwargs)

    return wrapped
