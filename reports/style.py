"""One look for every figure: a fixed colour and marker per method label, the theme, the units, and
how figures are written, so a method is recognisable at a glance across the whole report."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from reports.load import CATEGORIES

MB = 2**20  # bytes; every memory axis and column is in MB of 2**20 bytes
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
CATEGORY_COLORS = dict(zip(CATEGORIES, sns.color_palette("mako_r", len(CATEGORIES)), strict=True))
THEME = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.85),
    "axes.titleweight": "bold",
    "legend.frameon": False,
}
FORMATS = ("png", "svg")


def method_styles(labels: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Colour and marker per label, assigned in sorted label order so every figure agrees. tab10's
    colours all read on white (as tick labels too); the marker tells methods apart without colour."""
    ordered = sorted(set(labels))
    colors = sns.color_palette("tab10" if len(ordered) <= 10 else "husl", len(ordered))
    return {label: {"color": colors[i], "marker": MARKERS[i % len(MARKERS)]}
            for i, label in enumerate(ordered)}


def themed(build: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """Build a figure under the report's theme without changing the caller's global style."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with plt.rc_context(THEME):
            return build(*args, **kwargs)

    return wrapper


def outside_legend(ax: plt.Axes, **kwargs: Any) -> None:
    """A legend right of the axes, where it can never cover data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    """Write ``name``.png and .svg (reproducible: fixed SVG ids, no date) and close the figure."""
    paths = []
    with plt.rc_context({"svg.hashsalt": "reports"}):
        for ext in FORMATS:
            path = out / f"{name}.{ext}"
            fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
            paths.append(path)
    plt.close(fig)
    return paths
