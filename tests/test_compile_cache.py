"""The persistent compilation cache (emojax.compile_cache) that scripts turn on in run_main.

Each run is a fresh process (the cache is read when a process compiles what an earlier one
wrote), started like a script: through `emojax.workdir.run_main`. JAX's monitoring events
count the compiles that asked the cache and the ones it answered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emojax import compile_cache

SCRIPT = """
import json
from emojax.workdir import run_main

def main(argv):
    import jax
    import jax.numpy as jnp

    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    f(jnp.arange(64.0).reshape(8, 8)).block_until_ready()
    print(json.dumps({
        "dir": jax.config.jax_compilation_cache_dir,
        "requests": events.count("/jax/compilation_cache/compile_requests_use_cache"),
        "hits": events.count("/jax/compilation_cache/cache_hits"),
    }))

if __name__ == "__main__":
    run_main(main)
"""


def _run_script(tmp_path: Path, env: dict[str, str]) -> dict:
    script = tmp_path / "compile_once.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.name.endswith("-cache")}


def test_a_second_process_reads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    first = _run_script(tmp_path, {compile_cache.ENV: str(cache)})
    assert first["dir"] == str(cache)
    assert first["requests"] >= 1 and first["hits"] == 0
    written = _entries(cache)
    assert len(written) == first["requests"]  # every program, however small, is cached

    second = _run_script(tmp_path, {compile_cache.ENV: str(cache)})
    assert second["requests"] == first["requests"]
    assert second["hits"] == second["requests"]  # nothing compiled again
    assert _entries(cache) == written


def test_default_directory_is_under_the_emojax_cache_root(tmp_path):
    root = tmp_path / "root"
    result = _run_script(tmp_path, {"EMOJAX_CACHE": str(root), compile_cache.ENV: "1"})
    assert result["dir"] == str(root / "xla")
    assert _entries(root / "xla")


@pytest.mark.parametrize("value", ["0", "off"])
def test_turned_off_by_the_environment(tmp_path, value):
    root = tmp_path / "root"
    result = _run_script(tmp_path, {"EMOJAX_CACHE": str(root), compile_cache.ENV: value})
    assert result["dir"] is None and result["hits"] == 0
    assert not root.exists()


def test_off_under_pytest_unless_asked_for(tmp_path, monkeypatch):
    # The suite must not write into the user's cache: pytest sets PYTEST_VERSION, which the
    # script subprocesses of the tests inherit.
    assert os.environ.get("PYTEST_VERSION")
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path / "root"))
    assert compile_cache.cache_dir() is None
    assert _run_script(tmp_path, {})["dir"] is None
    monkeypatch.setenv(compile_cache.ENV, "1")
    assert compile_cache.cache_dir() == tmp_path / "root" / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "elsewhere"))
    assert compile_cache.cache_dir() == tmp_path / "elsewhere"
