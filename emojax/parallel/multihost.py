"""Multi-host helpers: the processes of a TPU pod slice running one program.

`maybe_initialize_distributed` before anything touches a device; every host then runs the
same program, `to_host` gathers results, only `is_writer()` (process 0) writes files, and
`sync` / `broadcast_from_writer` / `writer_exists` / `read_on_writer` let the other
processes agree with what process 0 sees on its disk. With one process each is a no-op or a
plain local read.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from emojax import results

_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def _multihost_env() -> bool:
    """True when the environment describes a multi-process JAX job."""
    if os.environ.get("EMOJAX_DISTRIBUTED", "").lower() in ("1", "true", "yes"):
        return True
    if any(os.environ.get(k) for k in _COORDINATOR_ENV):
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return True
    return bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def maybe_initialize_distributed(flag: bool | str | None = None) -> bool:
    """Calls `jax.distributed.initialize()` when asked, or when the env says multi-host.

    Must run before the first use of `jax.devices()`. On Cloud TPU pod slices JAX discovers
    the coordinator and process ids itself; `tpu/launch.sh` sets EMOJAX_DISTRIBUTED=1.

    Args:
      flag: True / "yes" forces initialisation, False / "no" forbids it, None / "auto"
        (default) auto-detects from
        EMOJAX_DISTRIBUTED, JAX_COORDINATOR_ADDRESS, TPU_WORKER_HOSTNAMES (> 1 host) or
        MEGASCALE_COORDINATOR_ADDRESS.

    Returns:
      Whether this process is part of an initialised multi-process job.
    """
    if isinstance(flag, str):  # a config's mesh.distributed: "auto" | "yes" | "no"
        flag = {"auto": None, "yes": True, "true": True, "no": False, "false": False}[flag.lower()]
    if flag is False or (flag is None and not _multihost_env()):
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize()
    return True


def is_writer() -> bool:
    """True on the one process (0) that writes results, plots and reports."""
    return jax.process_index() == 0


def to_host(x: Any) -> Any:
    """Gathers (a pytree of) global arrays to full numpy arrays on every process."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(one, x)


def sync(name: str) -> None:
    """Barrier across processes (no-op with one process), e.g. after process 0 writes."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast_from_writer(x: Any) -> Any:
    """Process 0's value of a pytree of numpy arrays/scalars, on every process.

    Used where only process 0 can see the files (the chunk store's list of finished chunks
    on hosts without a shared filesystem).
    """
    if jax.process_count() == 1:
        return x
    return multihost_utils.broadcast_one_to_all(x)


def writer_exists(path: str) -> bool:
    """Whether `path` exists on process 0, answered identically on every process.

    The chunk store asks this before each chunk; all processes must agree on whether to
    compute it (the computation holds collectives), and only process 0 writes files, which
    other hosts may not see (TPU VM workers share no filesystem by default).
    """
    exists = os.path.exists(path) if is_writer() else False
    return bool(broadcast_from_writer(np.asarray(exists, np.int32)))


def read_on_writer(path: str) -> bytes:
    """The bytes of a file on process 0, on every process (e.g. a finished chunk's .npz)."""
    if jax.process_count() == 1:
        with open(path, "rb") as f:
            return f.read()
    data = b""
    if is_writer():
        with open(path, "rb") as f:
            data = f.read()
    size = int(broadcast_from_writer(np.asarray(len(data), np.int64)))
    buf = np.frombuffer(data, np.uint8) if is_writer() else np.zeros(size, np.uint8)
    return np.asarray(broadcast_from_writer(buf), np.uint8).tobytes()


# What a `results.ChunkStore` of a run that may span hosts is given: process 0 writes, every
# process gets process 0's answers (with one process: local files).
WRITER_FILES = results.WriterFiles(is_writer=is_writer, exists=writer_exists, read=read_on_writer)
