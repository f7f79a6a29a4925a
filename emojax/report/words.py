"""Numbers and names in words for report.md: estimates with intervals, shares of draws, Δs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

FAILURE_TYPES = ("harmful_compliance", "over_refusal")
TYPE_SHORT = {"harmful_compliance": "HC", "over_refusal": "OR"}


def finite(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and math.isfinite(float(x))


def num(x: Any, spec: str = "{:.3f}") -> str:
    """A number, '–' for a missing one and '∞' for an infinite one."""
    if x is None or (isinstance(x, float | np.floating) and math.isnan(x)):
        return "–"
    if isinstance(x, float | np.floating) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return spec.format(x)


def interval(est: Any, lo: Any, hi: Any, spec: str = "{:+.3f}") -> str:
    if not finite(est):
        return "–"
    return f"{spec.format(est)} [{num(lo, spec)}, {num(hi, spec)}]"


def share(x: float) -> str:
    """A share of draws in percent with one decimal, never rounded onto 0 % or 100 %."""
    if 0.0 < x < 0.0005:
        return "< 0.1 %"
    if 0.9995 <= x < 1.0:
        return "> 99.9 %"
    return f"{100 * x:.1f} %"


def delta_name(name: str) -> str:
    """'delta_steer/over_refusal' -> 'Δ_steer OR'."""
    stat, _, ftype = name.partition("/")
    return f"{stat.replace('delta_', 'Δ_')} {TYPE_SHORT.get(ftype, ftype)}".strip()


def delta_names(names: Sequence[str]) -> str:
    return ", ".join(delta_name(n) for n in names)


def md_cell(text: Any, limit: int = 220) -> str:
    """One table cell: no newline or pipe, at most `limit` characters."""
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def rule_scale(cfg, stat: str) -> str:
    b = cfg.breakpoint
    return str(b.get("mon_scale" if stat == "delta_mon" else "steer_scale", "absolute"))
