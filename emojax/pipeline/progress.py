"""Progress lines of the break-point run: items per second and an ETA, and timed stages."""

from __future__ import annotations

import functools
import logging as std_logging
import time
from collections.abc import Callable

from absl import logging


class Progress:
    """Stage / item progress lines with items per second and an ETA."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done = total, what, 0
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        logging.info(
            "[%s %d/%d] %s | %.2f %s/min | elapsed %.0fs | ETA %.0fs",
            self.what, self.done, self.total, message, 60 * rate, self.what, elapsed, eta,
        )  # fmt: skip


class _DropInfo(std_logging.Filter):
    """Drops INFO records of chatty libraries (orbax logs every checkpoint step)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno > std_logging.INFO or "orbax" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps the progress lines readable: orbax's INFO lines are dropped."""
    logging.get_absl_handler().addFilter(_DropInfo())


def stage(name: str) -> Callable:
    """Logs the start and duration of a pipeline stage."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            logging.info("  stage %s ...", name)
            out = fn(*args, **kwargs)
            logging.info("  stage %s done in %.1fs", name, time.perf_counter() - t0)
            return out

        return run

    return wrap
