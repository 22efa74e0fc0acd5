"""The few statistics the reports need: t-based confidence intervals over seeds, Pareto fronts and
time to a target accuracy. Kept apart from plotting so tests can check the numbers directly."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean, half-width of its t-based interval and count of the finite values.

    Seeds are few (2-5), so the interval uses Student's t, not the normal; with one value the
    half-width is nan (no interval), with none the mean is nan too.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    if len(v) == 1:
        return float(v[0]), math.nan, 1
    half = stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def band(rounds: pd.DataFrame, y: str, x: str = "round") -> pd.DataFrame:
    """Per round, the mean of ``y`` over seeds with its interval; ``x`` is averaged over the same
    seeds (cumulative wall time differs between seeds). Rounds where no seed has ``y`` are dropped."""
    rows = []
    for r, group in rounds.dropna(subset=[y]).groupby("round", sort=True):
        mean, half, n = mean_ci(group[y])
        rows.append({"round": r, "x": group[x].mean(), "mean": mean,
                     "lo": mean - half, "hi": mean + half, "n": n})
    return pd.DataFrame(rows, columns=["round", "x", "mean", "lo", "hi", "n"])


def pareto_front(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """Which points no other point beats: lower or equal cost and higher or equal value, one strictly."""
    c, v = np.asarray(list(cost), dtype=float), np.asarray(list(value), dtype=float)
    ok = np.isfinite(c) & np.isfinite(v)
    dominated = ((c[None, :] <= c[:, None]) & (v[None, :] >= v[:, None])
                 & ((c[None, :] < c[:, None]) | (v[None, :] > v[:, None])) & ok[None, :]).any(axis=1)
    return ok & ~dominated


def time_to_target(run: pd.DataFrame, target: float) -> float:
    """Cumulative wall time (s) at the first round whose accuracy reaches ``target``; nan if none."""
    reached = run[run["accuracy"] >= target].sort_values("round")
    return float(reached["wall_time"].iloc[0]) if len(reached) else math.nan
