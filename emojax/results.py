"""Result records: a resumable chunk store, per-prompt readout files and provenance.

* `ChunkStore`: a long computation is split into chunks with stable keys; each finished chunk
  is written atomically (`atomic_write`), so a killed run leaves only whole
  chunks and a rerun skips them. The store remembers a fingerprint of what it computes and
  refuses to mix chunks of a different computation into one directory.
* `atomic_write` and its `write_bytes` / `write_text` / `save_figure` / `save_arrays` /
  `write_json` forms: every output a run writes (report, plots, CSV, JSON, `.npz`) is
  published atomically: written under a temporary name in its own directory, fsynced, then
  renamed over the target, so a reader (or a rerun after a kill) sees the previous good file
  or the new one, never a truncated one.
* `save_arrays` / `load_arrays`: atomic `.npz` of named arrays (per-prompt readouts, from
  which every interval can be recomputed).
* `provenance` / `write_json`: the record every script puts in its `config.json` (git commit,
  versions, seed, model paths and content hashes, host, time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

_FINGERPRINT = "fingerprint.json"


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Publishes a file atomically: `write(f)` fills a temporary file, then it replaces `path`.

    The temporary file lives in `path`'s directory (so the rename never crosses a filesystem)
    under a hidden, unique name holding ".tmp"; it is fsynced before `os.replace` and the
    directory after it. If `write` (or anything before the rename) raises, the temporary file
    is removed and `path` is untouched: the previous version stays whole.

    Args:
      path: the output file.
      write: fills a binary file object opened for writing.
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Makes a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically (`atomic_write`)."""
    write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path: str, **savefig_kwargs: Any) -> None:
    """`fig.savefig` to a temporary file, renamed into place (`atomic_write`).

    The format is `path`'s extension ("png", "pdf", "svg"), unless `format` is given.
    """
    fmt = savefig_kwargs.pop("format", None) or os.path.splitext(path)[1].lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def save_arrays(path: str, arrays: Mapping[str, Any]) -> None:
    """Writes named arrays to `path` (.npz) atomically."""
    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """Reads an .npz written by `save_arrays` into a dict of arrays."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_json(path: str, obj: Any) -> None:
    """Writes JSON atomically (NumPy scalars and arrays are converted)."""
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False))


def to_jsonable(x: Any) -> Any:
    """NumPy / JAX values -> plain Python for JSON (NaN stays NaN)."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "tolist") and hasattr(x, "dtype"):
        return np.asarray(x).tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able description (config, prompts, model hash)."""
    text = json.dumps(to_jsonable(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class WriterFiles:
    """How a `ChunkStore` reaches the files of the one process that writes them.

    This module imports nothing of the multi-host machinery: whoever makes a store passes
    `emojax.sharding.WRITER_FILES` (process 0 writes, every process sees its answers) on a
    run that may span hosts, or nothing (`LOCAL_FILES`) on one process.

    Attributes:
      is_writer: () -> True on the process that writes.
      exists: path -> whether the writer's file exists, the same answer on every process.
      read: path -> the bytes of the writer's file, on every process.
    """

    is_writer: Callable[[], bool]
    exists: Callable[[str], bool]
    read: Callable[[str], bytes]


def _read_local(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# One process: it writes, and its files are the files.
LOCAL_FILES = WriterFiles(is_writer=lambda: True, exists=os.path.exists, read=_read_local)


class ChunkStore:
    """Chunks of a resumable computation, one atomic `.npz` file per chunk key.

    Usage:
      store = ChunkStore(os.path.join(workdir, "chunks"), fingerprint(spec))
      for key in keys:
          if not store.has(key):
              store.save(key, compute(key))
      results = [store.load(key) for key in keys]

    Because a chunk's content depends only on its key and the fingerprinted spec, a run that
    was killed and resumed produces the same files as an uninterrupted one.

    Args:
      directory: where the chunks live.
      spec_fingerprint: `fingerprint` of everything that decides the chunks' numbers.
      files: the writer's files (`WriterFiles`); None = `LOCAL_FILES`, refused when JAX runs
        more than one process (pass `emojax.sharding.WRITER_FILES` there).
    """

    def __init__(self, directory: str, spec_fingerprint: str, files: WriterFiles | None = None):
        if files is None:
            import jax

            if jax.process_count() > 1:
                raise ValueError(
                    "a ChunkStore on a multi-process run needs files=emojax.sharding."
                    "WRITER_FILES (process 0 writes, every process reads its chunks)"
                )
            files = LOCAL_FILES
        self.files = files
        self.directory = directory
        if files.is_writer():
            os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, _FINGERPRINT)
        if files.exists(path):
            stored = json.loads(files.read(path))["fingerprint"]
            if stored != spec_fingerprint:
                raise ValueError(
                    f"chunk store {directory} holds a different computation "
                    f"(fingerprint {stored}, this run {spec_fingerprint}); use a new workdir "
                    "or delete the chunks directory"
                )
        elif files.is_writer():
            write_json(path, {"fingerprint": spec_fingerprint})
        self.fingerprint = spec_fingerprint

    def _path(self, key: str) -> str:
        if not key or any(c in key for c in "/\\") or key.startswith("."):
            raise ValueError(f"bad chunk key {key!r}")
        return os.path.join(self.directory, f"{key}.npz")

    def has(self, key: str) -> bool:
        """Whether the chunk exists (on process 0; every process gets the same answer)."""
        return self.files.exists(self._path(key))

    def save(self, key: str, arrays: Mapping[str, Any]) -> None:
        """Writes the chunk atomically (process 0 only)."""
        if self.files.is_writer():
            save_arrays(self._path(key), arrays)

    def load(self, key: str) -> dict[str, np.ndarray]:
        """Reads the chunk (process 0's file, broadcast to every process)."""
        data = self.files.read(self._path(key))
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def keys(self) -> list[str]:
        """Keys of the stored chunks (meaningful on process 0)."""
        return sorted(
            f[: -len(".npz")]
            for f in os.listdir(self.directory)
            if f.endswith(".npz") and ".tmp" not in f
        )


def file_sha256(path: str, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def model_hash(model_dir: str) -> dict[str, str]:
    """SHA-256 of the weight and config files of a checkpoint directory (or of a .gguf file)."""
    out = {}
    if os.path.isfile(model_dir) and model_dir.endswith(".gguf"):
        return {os.path.basename(model_dir): file_sha256(model_dir)[:16]}
    if not os.path.isdir(model_dir):
        return out
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".json", ".bin", ".model")):
            out[name] = file_sha256(os.path.join(model_dir, name))[:16]
    return out


def git_commit(repo_dir: str | None = None) -> str | None:
    """HEAD commit of the repository holding this package (None outside git)."""
    repo_dir = repo_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", repo_dir, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "-C", repo_dir, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def package_versions(names=("jax", "jaxlib", "flax", "numpy", "transformers", "torch")) -> dict:
    """Versions of the packages that shape numerical results (those installed)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(
    *,
    seed: int | None = None,
    models: Mapping[str, str] | None = None,
    config: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record for a run's `config.json`.

    Args:
      seed: the run's seed.
      models: name -> checkpoint directory; each gets its path and file hashes.
      config: the resolved config (a ConfigDict is converted with `to_dict`).
      extra: anything else to record.

    Returns:
      A JSON-able dict: time, host, command line, git commit, package versions, JAX devices,
      seed, models, config, extra.
    """
    try:
        import jax

        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except Exception:  # noqa: BLE001 - provenance must never fail a run.
        devices, backend = [], None
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    record = {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "backend": backend,
        "devices": devices,
        "seed": seed,
        "models": {
            name: {"path": os.path.abspath(path), "sha256": model_hash(path)}
            for name, path in (models or {}).items()
        },
        "config": to_jsonable(config),
    }
    if extra:
        record.update(to_jsonable(dict(extra)))
    return record
