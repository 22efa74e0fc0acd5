"""One look for every figure: a fixed colour per method (and marker per label), the theme, the units,
and how figures are written, so a method is recognisable at a glance across every report."""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from reports.load import CATEGORIES

MB = 2**20  # bytes; every memory axis and column is in MB of 2**20 bytes
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
# qualitative, so that neighbouring categories in a stacked bar differ (a sequential palette's do not)
CATEGORY_COLORS = dict(zip(CATEGORIES, sns.color_palette("Set2", len(CATEGORIES)), strict=True))
THEME = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.85),
    "axes.titleweight": "bold",
    "legend.frameon": False,
}
FORMATS = ("png", "svg")


TAB10 = sns.color_palette("tab10", 10)
# One colour and one marker per method, the same in every report (two methods of like colours have
# unlike markers); a method not listed takes both from its name.
METHOD_COLORS = {
    "fedavg": TAB10[0], "exclusive": TAB10[1], "allsmall": TAB10[2], "neulite": TAB10[3],
    "heterofl": TAB10[4], "fedrolex": TAB10[5], "fjord": TAB10[6], "depthfl": TAB10[8], "fedprox": TAB10[9],
    "microbatch": TAB10[7], "checkpoint": (0.12, 0.12, 0.12),
}
METHOD_MARKERS = {
    "fedavg": "o", "exclusive": "s", "allsmall": "^", "neulite": "*", "heterofl": "D", "fedrolex": "v",
    "fjord": "P", "depthfl": "X", "fedprox": "<", "microbatch": ">", "checkpoint": "h",
}
OTHER_COLORS = sns.color_palette("husl", 24)
SHADES = (0.0, -0.35, 0.35, -0.6, 0.6)  # variants of a method's colour for its second, third... label


def speedup_text(mean: float, lo: float, hi: float) -> str:
    """A speed-up as tables and figures show it: "×1.64 (×0.78–×2.50)", without an interval "×1.64",
    "n/a" when there is none."""
    if math.isnan(mean):
        return "n/a"
    return f"×{mean:.2f}" + ("" if math.isnan(lo) else f" (×{lo:.2f}–×{hi:.2f})")


def method_color(method: str) -> tuple[float, float, float]:
    return METHOD_COLORS.get(method) or OTHER_COLORS[zlib.crc32(method.encode()) % len(OTHER_COLORS)]


def method_marker(method: str, variant: int = 0) -> str:
    """The method's marker; its ``variant``-th further label (an ablation) takes the next ones."""
    first = MARKERS.index(METHOD_MARKERS[method]) if method in METHOD_MARKERS else \
        zlib.crc32(method.encode()) % len(MARKERS)
    return MARKERS[(first + variant) % len(MARKERS)]


def shade(color: tuple[float, float, float], amount: float) -> tuple[float, float, float]:
    """Towards black (negative) or white (positive) by ``amount`` of the way."""
    target = 0.0 if amount < 0 else 1.0
    return tuple(c + (target - c) * abs(amount) for c in color)


def method_styles(methods: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Colour and marker per label (``methods``: label -> method): the method's own colour, shaded
    and with another marker for each further label of the same method (ablations), so a method
    is recognisable at a glance in every report and stays so when others are added."""
    styles: dict[str, dict[str, Any]] = {}
    taken: dict[str, int] = {}
    for label in sorted(methods):
        k = taken[methods[label]] = taken.get(methods[label], -1) + 1
        styles[label] = {"color": shade(method_color(methods[label]), SHADES[k % len(SHADES)]),
                         "marker": method_marker(methods[label], k)}
    return styles


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


def replace_file(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` the file to a temporary name beside ``path``, then rename it into place: a render
    killed midway leaves the earlier file or the new one, never a truncated one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    """Write ``name``.png and .svg (reproducible: fixed SVG ids, no date) and close the figure."""
    paths = []
    try:
        with plt.rc_context({"svg.hashsalt": "reports"}):
            for ext in FORMATS:
                paths.append(replace_file(out / f"{name}.{ext}", lambda tmp, ext=ext: fig.savefig(
                    tmp, format=ext, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)))
    finally:
        plt.close(fig)
    return paths
