"""The few statistics the reports need: intervals over seeds, Pareto fronts and time to a target
accuracy. Kept apart from plotting so tests can check the numbers directly.

An interval over seeds is a 95% Student's t-interval only with 3 seeds or more; with 2 the t
quantile (12.7 for one degree of freedom) makes it mostly width, so the min-max range of the two is
shown instead, and with 1 there is none. Intervals of fractions are clipped to [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from reports.load import ESTIMATE

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


MIN_SEEDS_FOR_T = 3
INTERVAL_NAMES = {"t95": "95% t-interval", "range": "min–max range", "none": "no interval"}


def interval_kind(n: int) -> str:
    """Which interval ``n`` seeds support: "t95", "range" or "none"."""
    return "t95" if n >= MIN_SEEDS_FOR_T else "range" if n == 2 else "none"


def interval(values: Iterable[float], lower: float = -math.inf, upper: float = math.inf,
             ) -> tuple[float, float, float, int]:
    """Mean, interval bounds (clipped to [lower, upper]; nan without an interval) and count of
    the finite values, the interval chosen by ``interval_kind``."""
    values = list(values)
    mean, half, n = mean_ci(values)
    kind = interval_kind(n)
    if kind == "t95":
        lo, hi = mean - half, mean + half
    elif kind == "range":
        v = [x for x in values if x is not None and math.isfinite(x)]
        lo, hi = min(v), max(v)
    else:
        return mean, math.nan, math.nan, n
    return mean, max(lo, lower), min(hi, upper), n


def band(rounds: pd.DataFrame, y: str, x: str = "round") -> pd.DataFrame:
    """Per round, the mean of ``y`` (a fraction) over seeds with its interval (``interval``,
    clipped to [0, 1]); ``x`` is averaged over the same seeds (cumulative time differs between
    seeds). Rounds where no seed has ``y`` are dropped."""
    rows = []
    for r, group in rounds.dropna(subset=[y]).groupby("round", sort=True):
        mean, lo, hi, n = interval(list(group[y]), 0.0, 1.0)
        rows.append({"round": r, "x": group[x].mean(), "mean": mean, "lo": lo, "hi": hi, "n": n})
    return pd.DataFrame(rows, columns=["round", "x", "mean", "lo", "hi", "n"])


def pareto_front(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """Which points no other point beats: lower or equal cost and higher or equal value, one strictly."""
    c, v = np.asarray(list(cost), dtype=float), np.asarray(list(value), dtype=float)
    ok = np.isfinite(c) & np.isfinite(v)
    dominated = ((c[None, :] <= c[:, None]) & (v[None, :] >= v[:, None])
                 & ((c[None, :] < c[:, None]) | (v[None, :] > v[:, None])) & ok[None, :]).any(axis=1)
    return ok & ~dominated


def time_to_target(run: pd.DataFrame, target: float, clock: str = "device_wall_time") -> float:
    """Cumulative time (s; device time by default) at the first round whose accuracy reaches
    ``target``; nan if none."""
    reached = run[run["accuracy"] >= target].sort_values("round")
    return float(reached[clock].iloc[0]) if len(reached) else math.nan


def _span(n: int, share: float) -> int:
    """How many of ``n`` values make up a ``share`` of them: at least one."""
    return max(1, math.ceil(share * n))


def last_rounds(values: pd.Series, share: float = 0.1) -> pd.Series:
    """The last ``share`` of a run's values in round order (at least one): what a run ends on,
    less noisy than its last round alone."""
    return values.iloc[-_span(len(values), share):]


PLATEAU = 0.015  # a run is at its plateau when its last tenth moves at most 1.5 points from the tenth before


def plateau_change(values: pd.Series, share: float = 0.1) -> float:
    """How far a run still moves: the mean of its last ``share`` of values (in round order) minus
    the mean of the ``share`` before it; nan when there are too few values for two such spans."""
    k = _span(len(values), share)
    if len(values) < 2 * k:
        return math.nan
    return float(values.iloc[-k:].mean() - values.iloc[-2 * k:-k].mean())


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals (lo, hi) share a point; nan bounds (no interval) never do."""
    return a[0] <= b[1] and b[0] <= a[1]


def near_chance(accuracy: float, classes: int, test_samples: int) -> bool:
    """Whether an accuracy cannot be told from guessing one of ``classes``: within three binomial
    standard errors of ``1 / classes`` on a test set of ``test_samples``."""
    chance = 1 / classes
    return accuracy <= chance + 3 * math.sqrt(chance * (1 - chance) / test_samples)


def fits_per_round(clients: pd.DataFrame) -> pd.DataFrame:
    """Per label, seed and round: the share of devices whose budget covers the task offered to it
    (what the memory gate held against it: the estimate, plus the allocator's overhead where a
    GPU run gated on it and recorded ``need``)."""
    need = clients["need"].fillna(clients[ESTIMATE]) if "need" in clients else clients[ESTIMATE]
    fits = (need.le(clients["budget"]) & need.notna()).astype(float)
    weight = clients["weight"].fillna(1.0) if "weight" in clients else 1.0  # a row of unselected devices: many
    counted = clients.assign(fit=clients["fits"].fillna(fits) if "fits" in clients else fits, weight=weight)
    sums = counted.groupby(["label", "seed", "round"], as_index=False)[["fit", "weight"]].sum()
    return sums.assign(fits=sums["fit"] / sums["weight"])[["label", "seed", "round", "fits"]]
