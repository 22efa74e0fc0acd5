"""The comparative figures, one function each: they take the loaded DataFrames (or the summary)
and return the Figure, or None when there is nothing to plot, so tests can read the plotted data
back from the artists and the caller decides where to save."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from reports.load import CATEGORIES, ESTIMATE, TENSOR
from reports.stats import INTERVAL_NAMES, band, fits_per_round, interval_kind, pareto_front
from reports.style import CATEGORY_COLORS, MB, outside_legend, speedup_text, themed

PEAK = TENSOR + "peak"
FLEET_PANEL_INCHES = 3  # wide enough for the names of the methods on one memory level, a few a line
DEVICE_CLOCK = "device_wall_time"


def interval_note(seed_counts: Iterable[int], clipped: str = "0–100%") -> str | None:
    """What an interval drawn over these numbers of seeds is, naming them (a t-interval over 3
    seeds is wide), and where it is clipped; None: no interval at all."""
    counts = sorted({int(n) for n in seed_counts if interval_kind(int(n)) != "none"})
    kinds = {kind: [n for n in counts if interval_kind(n) == kind] for kind in INTERVAL_NAMES if kind != "none"}
    named = [f"{INTERVAL_NAMES[kind]} ({'/'.join(map(str, ns))} seeds)" for kind, ns in kinds.items() if ns]
    return " or ".join(named) + (f", clipped to {clipped}" if clipped else "") if named else None


def band_note(rounds: pd.DataFrame, columns: Sequence[str] = ("accuracy",)) -> str | None:
    """What the shaded area means, for the seed counts each drawn round has (``stats.band`` picks
    the interval round by round: a seed that stopped early leaves later rounds a range); None: no
    band at all."""
    counts = (rounds.dropna(subset=[c]).groupby(["label", "round"])["seed"].nunique() for c in columns)
    note = interval_note(n for per_round in counts for n in per_round)
    return None if note is None else "line: mean over seeds\nshaded: " + note


def plot_band(ax: Axes, rounds: pd.DataFrame, y: str, x: str, style: dict, ci: bool = True,
              **line: object) -> None:
    """Mean over seeds as a line and, where two or more seeds have data, their interval as a band
    (``stats.band``: a t-interval with 3+ seeds, the min-max range with 2, clipped to [0, 1])."""
    b = band(rounds, y, x)
    markevery = max(1, len(b) // 12)
    ax.plot(b["x"], b["mean"], color=style["color"], marker=style["marker"], markersize=4,
            markevery=markevery, **line)
    if ci and (b["n"] > 1).any():
        ax.fill_between(b["x"], b["lo"], b["hi"], color=style["color"], alpha=0.12, linewidth=0)


def megabytes(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def round_axis(ax: Axes) -> None:
    """Rounds are whole numbers."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def stacked_bars(ax: Axes, tops: pd.DataFrame) -> None:
    """Bars stacked by memory category (MB), one per row of ``tops``, peak written on top."""
    bottom = np.zeros(len(tops))
    for category in CATEGORIES:
        heights = tops[TENSOR + category].fillna(0).to_numpy() / MB
        ax.bar(np.arange(len(tops)), heights, bottom=bottom, width=0.6, color=CATEGORY_COLORS[category],
               edgecolor="white", linewidth=0.5, label=category)
        bottom += heights
    for i, peak in enumerate(tops[PEAK] / MB):
        text = megabytes(peak) if np.isfinite(peak) else "none\ntrained"
        ax.annotate(text, (i, np.nan_to_num(peak)), xytext=(0, 6), textcoords="offset points",
                    ha="center", va="bottom", fontsize="small")


def _values(series: pd.Series, scale: float, unit: str) -> str:
    """A fleet column's values as a reader wants them: one value, or the range the devices span."""
    low, high = series.min() / scale, series.max() / scale
    return f"{low:g} {unit}" if math.isclose(low, high) else f"{low:g}-{high:g} {unit}"


def time_assumptions(fleet: pd.DataFrame | None) -> str | None:
    """The device time model's inputs, from the recorded fleets (docs/device-time.md): what every
    simulated second in a time figure rests on. None: no fleet recorded."""
    if fleet is None or fleet.empty or fleet[["flops", "up", "down"]].isna().all().all():
        return None
    return (f"device time model: {_values(fleet['flops'], 1e9, 'GFLOP/s')} of training, links "
            f"{_values(fleet['up'] * 8, 1e6, 'Mbit/s')} up and {_values(fleet['down'] * 8, 1e6, 'Mbit/s')} down")


def panel_grid(count: int, width: float = 4.2, height: float = 3.3) -> tuple[Figure, np.ndarray]:
    """``count`` panels sharing both axes, at most three a row; the spare ones hidden."""
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.5, height * rows), sharex=True, sharey=True,
                             squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
        axes[-2, list(axes[-1]).index(ax)].xaxis.set_tick_params(labelbottom=True)  # the column's last shown
    return fig, axes


def bottom_panels(axes: np.ndarray) -> list[Axes]:
    """The lowest shown panel of each column (where the x axis is labelled)."""
    return [next(ax for ax in column[::-1] if ax.get_visible()) for column in axes.T]


def _accuracy(rounds: pd.DataFrame, styles: dict, x: str, xlabel: str, title: str,
              assumptions: str | None = None, panels: dict[str, str] | None = None,
              context: bool = False) -> Figure | None:
    """Accuracy against ``x``, one line per label; with ``panels`` (label -> panel name) one panel
    per name, in small multiples, and with ``context`` every other label drawn faint grey behind
    each panel's own, so a panel still reads against the rest."""
    data = rounds.dropna(subset=["accuracy", x])
    if data.empty:
        return None
    drawn = sorted(data["label"].unique())
    names = sorted({panels[label] for label in drawn}) if panels else [title]
    fig, axes = panel_grid(len(names)) if panels else plt.subplots(figsize=(7.5, 4.2), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        own = [label for label in drawn if not panels or panels[label] == name]
        for label, group in data.groupby("label"):
            if label in own:
                plot_band(ax, group, "accuracy", x, styles[label], label=styles[label]["name"],
                          linestyle="--" if styles[label].get("over_budget") else "-")
            elif context:
                b = band(group, "accuracy", x)
                ax.plot(b["x"], b["mean"], color="0.8", linewidth=0.8, zorder=1, gid=f"context {label}")
        ax.set_title(name if panels else title, fontsize="medium" if panels else None)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        if x == "round":
            round_axis(ax)
    for ax in bottom_panels(axes):
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel("Test accuracy")
    if panels:
        fig.suptitle(title, fontweight="bold")
    over = any(styles[label].get("over_budget") for label in drawn)
    notes = [band_note(data), "dashed: ran over budget" if over else None,
             "grey: the other methods" if context else None,
             textwrap.fill(assumptions, 40) if assumptions else None]
    handles = [h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]]
    outside_legend(axes[0, -1], handles=handles, labels=[h.get_label() for h in handles],
                   title="\n".join(n for n in notes if n) or None)
    return fig


@themed
def accuracy_vs_round(rounds: pd.DataFrame, styles: dict, panels: dict[str, str] | None = None) -> Figure | None:
    """``panels`` (label -> suite, when suites are compared): one panel each."""
    return _accuracy(rounds, styles, "round", "Round", "Accuracy by round", panels=panels)


@themed
def accuracy_vs_time(rounds: pd.DataFrame, styles: dict, fleet: pd.DataFrame | None = None,
                     panels: dict[str, str] | None = None) -> Figure | None:
    """Against simulated time on the devices (docs/device-time.md), not the host's wall time."""
    return _accuracy(rounds, styles, DEVICE_CLOCK, "Cumulative device time (s, simulated; mean over seeds)",
                     "Accuracy by device time", time_assumptions(fleet), panels=panels)


@themed
def accuracy_by_family(rounds: pd.DataFrame, styles: dict, families: dict[str, str]) -> Figure | None:
    """Accuracy by round in small multiples, one panel per kind of method (``families``: label ->
    family), the rest grey behind; None with one family (the plain figure says it all)."""
    drawn = rounds.dropna(subset=["accuracy"])["label"].unique()
    if len({families[label] for label in drawn}) < 2:
        return None
    return _accuracy(rounds, styles, "round", "Round", "Accuracy by round, by kind of method",
                     panels=families, context=True)


@themed
def device_time_split(summary: pd.DataFrame, styles: dict, fleet: pd.DataFrame | None = None) -> Figure | None:
    """Where a client's simulated round goes, per method: compute (its FLOPs over the device's
    FLOP/s) and communication (its bytes over the links), mean over its trained clients; the
    share of communication written beside each bar. None: no device time recorded."""
    rows = summary.dropna(subset=["compute_s", "comm_s"])
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))
    over = [bool(styles[label].get("over_budget")) for label in rows.index]
    for values, left, color, part in ((rows["compute_s"], 0, "0.35", "compute"),
                                      (rows["comm_s"], rows["compute_s"], "0.75", "comm")):
        bars = ax.barh(y, values, left=left, height=0.6, color=color, gid=part,
                       label="compute" if part == "compute" else "communication")
        for bar, hatched in zip(bars, over, strict=True):  # a run over budget: no device could take that time
            bar.set_hatch("//" if hatched else "")
    ends = rows["compute_s"] + rows["comm_s"]
    for i, (share, end) in enumerate(zip(rows["comm_share"], ends, strict=True)):
        ax.annotate(f"{share:.0%} communication", (end, i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize="small")
    ax.set_yticks(y, [styles[label]["name"] for label in rows.index])
    ax.invert_yaxis()
    ax.set_xlim(0, ends.max() * 1.35)
    ax.set(xlabel="Device time of a client's round (s, simulated; mean over trained clients)",
           title="Compute and communication per client round")
    assumptions = time_assumptions(fleet)
    notes = [textwrap.fill(assumptions, 40) if assumptions else None, "hatched: ran over budget" if any(over) else None]
    outside_legend(ax, title="\n".join(n for n in notes if n) or None)
    return fig


def name_overlapping_ends(ax: Axes, tolerance: float = 0.015) -> None:
    """Lines that end on one value hide each other: name them together at their end."""
    ends = sorted((line.get_ydata()[-1], line.get_xdata()[-1], line.get_label()) for line in ax.get_lines()
                  if len(line.get_xdata()))
    for group in ([ends[i] for i in near] for near in near_groups([e[0] for e in ends], tolerance)):
        if len(group) > 1:
            y, x = group[0][0], max(e[1] for e in group)
            names = textwrap.fill(", ".join(e[2] for e in group), 36)  # many names: lines, kept in the panel
            ax.annotate(names, (x, y), xytext=(-4, 5), textcoords="offset points",
                        ha="right", va="bottom", fontsize="xx-small", color="0.25", gid="shared end")


@themed
def participation(rounds: pd.DataFrame, clients: pd.DataFrame, styles: dict) -> Figure | None:
    devices = rounds["devices"].where(rounds["devices"] > 0)
    took_part = rounds.assign(share=rounds["participated"] / devices)
    if took_part["share"].isna().all() or clients.empty:
        return None
    fits = fits_per_round(clients).rename(columns={"fits": "share"})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, data, title in zip(axes, (fits, took_part),
                               ("Fits (the task offered fits the budget)", "Took part (trained, aggregated)"),
                               strict=True):
        for label, group in data.groupby("label"):
            plot_band(ax, group, "share", "round", styles[label], ci=False, label=styles[label]["name"])
        name_overlapping_ends(ax)
        ax.set(xlabel="Round", title=title)
        round_axis(ax)
    axes[0].set(ylabel="Devices of the fleet (mean over seeds)", ylim=(-0.02, 1.05))
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    outside_legend(axes[1])
    return fig


def fleet_panel(bx: Axes, fleet: pd.DataFrame, levels: dict[str, float], suites: dict[str, str],
                styles: dict) -> None:
    """Share of the fleet whose budget is at least each memory level (one curve per suite, the
    seeds' fleets pooled), with each method's smallest task dashed across it: where a line meets
    its suite's curve reads as the share of devices that can take part at all (marked)."""
    grid = np.linspace(0, bx.get_ylim()[1], 600)
    budgets = {name: group["budget"].to_numpy() / MB for name, group in fleet.groupby("suite")}
    for k, (name, values) in enumerate(budgets.items()):
        share = (values[None, :] >= grid[:, None]).mean(axis=1)
        bx.plot(share, grid, color="0.35", linewidth=1.5, linestyle=("-", "--", ":", "-.")[k % 4], gid="fleet",
                label=f"fleet: {name}" if len(budgets) > 1 else None)
        bx.fill_betweenx(grid, 0, share, color="0.35", alpha=0.15 / len(budgets), linewidth=0)
    for label, level in levels.items():
        color = styles[label]["color"]
        own = budgets.get(suites[label], np.array([]))
        bx.axhline(level, color=color, linestyle="--", linewidth=1.3, gid=f"admission {label}")
        if len(own):
            bx.plot([(own >= level).mean()], [level], marker=styles[label]["marker"], color=color,
                    markeredgecolor="black", markeredgewidth=0.5, gid=f"fits {label}")
    near = 0.02 * bx.get_ylim()[1]  # lines this close hide each other: one text names them all
    ordered = sorted(levels, key=levels.get)
    for shared in ([ordered[i] for i in group] for group in near_groups([levels[k] for k in ordered], near)):
        names = textwrap.fill(", ".join(styles[label]["name"] for label in shared), FLEET_PANEL_INCHES * 16)
        bx.annotate(names, (0.02, levels[shared[-1]]),
                    xytext=(0, 2), textcoords="offset points", fontsize="xx-small", color="0.25", va="bottom",
                    gid="levels " + ", ".join(shared))
    bx.set_xlim(0, 1.02)
    bx.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    fleets = fleet.groupby(["suite", "seed"]).ngroups
    bx.set(xlabel="Devices with at least this budget",
           title="Fleet budgets" + (f" ({fleets} fleets pooled)" if fleets > 1 and len(budgets) == 1 else ""))


@themed
def memory_by_method(clients: pd.DataFrame, fleet: pd.DataFrame, styles: dict) -> Figure | None:
    """Per method: the stacked categories of the client with the highest measured peak, every
    measured client's peak as a dot, and the range of its tasks' peaks (smallest: what a device needs to
    take part at all); beside it the fleet's budgets on the same MB axis, with each method's
    smallest task against them."""
    trained = clients.dropna(subset=[PEAK])
    if trained.empty:
        return None
    labels = sorted(clients["label"].unique())
    tasks = clients.dropna(subset=[ESTIMATE]).groupby("label")[ESTIMATE].agg(["min", "max"]).reindex(labels) / MB
    panels = 2 if len(fleet) else 1
    widths = [max(6.0, 0.9 * len(labels) + 3.5), FLEET_PANEL_INCHES][:panels]  # the fleet's: room for its names
    fig, axes = plt.subplots(1, panels, figsize=(sum(widths), 4.8), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    ax = axes[0, 0]
    tops = trained.loc[trained.groupby("label")[PEAK].idxmax()].set_index("label").reindex(labels)
    stacked_bars(ax, tops)
    for container in ax.containers:  # a method that ran over budget: hatched
        for bar, label in zip(container, labels, strict=True):
            bar.set_hatch("//" if styles[label].get("over_budget") else "")
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    per_client = trained.groupby(["label", "seed", "device"])[PEAK].max() / MB
    for i, label in enumerate(sorted(trained["label"].unique())):
        peaks = per_client.loc[label].to_numpy()
        ax.scatter(labels.index(label) + rng.uniform(-0.2, 0.2, len(peaks)), peaks, s=14, zorder=3,
                   color=styles[label]["color"], edgecolor="black", linewidth=0.5, gid=label,
                   label="each measured client's peak" if i == 0 else None)
    for i, label in enumerate(labels):  # the range of task peaks, beside the bar
        low, high = tasks.loc[label]
        if np.isfinite(low):
            ax.vlines(i + 0.4, low, high, color="0.2", linewidth=1.2, gid=f"tasks {label}")
            ax.plot([i + 0.4], [low], marker=">", color="0.2", markersize=6, linestyle="none", gid=f"smallest {label}",
                    label="its tasks' peaks (▸ smallest: to take part)" if i == 0 else None)
            ax.plot([i + 0.4], [high], marker="_", color="0.2", markersize=8, linestyle="none")
    tilt = len(labels) > 4
    ax.set_xticks(range(len(labels)), [styles[label]["name"] for label in labels],
                  rotation=30 if tilt else 0, ha="right" if tilt else "center")
    for tick, label in zip(ax.get_xticklabels(), labels, strict=True):
        tick.set_color(styles[label]["color"])
    ax.set(ylabel="Peak training memory (MB)", title="Peak memory by method")
    top = max(tops[PEAK].max() / MB, np.nanmax(tasks["max"].to_numpy(dtype=float)),
              fleet["budget"].max() / MB if len(fleet) else 0)
    ax.set_ylim(0, top * 1.12)
    handles, names = ax.get_legend_handles_labels()
    if panels == 2:
        suites = clients.drop_duplicates("label").set_index("label")["suite"].to_dict()
        fleet_panel(axes[0, 1], fleet, tasks["min"].dropna().to_dict(), suites, styles)
        handles.append(plt.Line2D([], [], color="0.3", linestyle="--"))
        names.append("smallest task (fits: marked)")
        curves, named = axes[0, 1].get_legend_handles_labels()  # several suites: which fleet curve is whose
        handles, names = curves[::-1] + handles, named[::-1] + names
    outside_legend(axes[0, -1], handles=handles[::-1], labels=names[::-1])
    return fig


def near_groups(values: Sequence[float], tolerance: float) -> list[list[int]]:
    """Indices of ``values`` grouped where they lie within ``tolerance`` of their group's first (in
    ascending order): things drawn that close hide each other."""
    groups: list[list[int]] = []
    for i in np.argsort(np.asarray(values, dtype=float), kind="stable"):
        if groups and abs(values[i] - values[groups[-1][0]]) <= tolerance:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return groups


def spread(values: list[float], gap: float) -> list[float]:
    """``values`` (ascending) moved apart to at least ``gap``, centred where they were."""
    out = list(values)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    shift = (sum(values) - sum(out)) / len(out)
    return [v + shift for v in out]


def names_side(x: np.ndarray, y: np.ndarray, group: list[int], names_y: list[float], ax: Axes,
               span: float) -> tuple[float, str]:
    """Where a memory group's names go (x, alignment): right of it, or left where another point
    would lie under them on the right and none on the left (and the axis leaves room there)."""
    others = np.delete(np.arange(len(x)), group)
    low, high = min(names_y), max(names_y)
    pad = 0.05 * (ax.get_ylim()[1] - ax.get_ylim()[0])
    beside = others[(y[others] >= low - pad) & (y[others] <= high + pad)]
    right, left = x[group].max() + 0.1 * span, x[group].min() - 0.1 * span

    def blocked(a: float, b: float) -> bool:
        return bool(((x[beside] > a) & (x[beside] < b)).any())

    if blocked(x[group].max(), right + 0.3 * span) and left - 0.3 * span >= ax.get_xlim()[0] \
            and not blocked(left - 0.3 * span, x[group].min()):
        return left, "right"
    return right, "left"


def separated_front(x: np.ndarray, low: np.ndarray, high: np.ndarray, on_front: np.ndarray) -> np.ndarray:
    """Of the Pareto front's points, those that show a gain: in order of memory, a point stays only
    if its accuracy interval lies above the last kept point's (a costlier method whose interval
    overlaps a cheaper one's on the front is not shown to be better)."""
    kept = np.zeros(len(x), dtype=bool)
    last_high = -math.inf
    for i in sorted(np.flatnonzero(on_front), key=lambda i: x[i]):
        if low[i] > last_high:
            kept[i], last_high = True, high[i]
    return kept


@themed
def memory_vs_accuracy(summary: pd.DataFrame, styles: dict, fronts: dict[str, str] | None = None) -> Figure | None:
    """Accuracy (each seed's last tenth of rounds) against the memory a device needs to take part
    (the method's smallest task), a bar to its largest task; the front joins the methods no other
    beats whose intervals separate, drawn only when every method within budget is at its plateau
    (one still moving, named "(moving)", could beat or fall below any point of it with more rounds,
    so a front then claims more than the records hold); with ``fronts`` (label -> suite:
    suites on different data or models compared) one front per suite, since a front across them
    would trade unlike things.
    Every point sits at its own values (none is moved along an axis to make room) and is named;
    the names of points on nearly one memory value are spread apart, with a leader line each."""
    points = summary.dropna(subset=["task_min_mb", "final"])
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x, y = points["task_min_mb"].to_numpy(float), points["final"].to_numpy(float)
    largest = points["task_max_mb"].fillna(points["task_min_mb"]).to_numpy(float)
    span = max(largest.max() - x.min(), largest.max() * 0.05, 1e-9)
    labels = list(points.index)
    feasible = np.array([not styles[label].get("over_budget") for label in labels])
    moving = points["moving"].to_numpy(bool) if "moving" in points else np.zeros(len(labels), dtype=bool)
    low, high = points["final_lo"].fillna(points["final"]), points["final_hi"].fillna(points["final"])
    group_of = np.array([fronts[label] if fronts else "" for label in labels])
    on_front = np.zeros(len(labels), dtype=bool)
    unsettled = {}  # suite -> methods within budget still moving: its front would not hold
    for name in np.unique(group_of):
        own = (group_of == name) & feasible  # over budget: no trade-off
        unsettled[name] = int((own & moving).sum())
        if own.any() and not unsettled[name]:
            on_front |= separated_front(x, low.to_numpy(float), high.to_numpy(float),
                                        pareto_front(np.where(own, x, np.nan), y))
    pad = 0.05 * max(high.max() - low.min(), 0.05)
    ax.set_xlim(x.min() - 0.08 * span, largest.max() + 0.35 * span)
    ax.set_ylim(max(low.min() - pad, 0.0), min(high.max() + pad, 1.02))
    for group in near_groups(x, 0.015 * span):
        group.sort(key=lambda i: y[i])
        names_y = spread([y[i] for i in group], 0.05 * (ax.get_ylim()[1] - ax.get_ylim()[0]))
        name_x, align = names_side(x, y, group, names_y, ax, span)
        for i, name_y in zip(group, names_y, strict=True):
            label, row, style = labels[i], points.iloc[i], styles[labels[i]]
            yerr = None
            if not math.isnan(row["final_lo"]):
                yerr = [[row["final"] - row["final_lo"]], [row["final_hi"] - row["final"]]]
            ax.errorbar(x[i], y[i], yerr=yerr, xerr=[[0.0], [largest[i] - x[i]]], fmt=style["marker"],
                        color=style["color"], markersize=7, capsize=3, elinewidth=1.0, alpha=0.85, label=style["name"],
                        markerfacecolor="none" if style.get("over_budget") else style["color"])
            if on_front[i]:
                ax.scatter([x[i]], [y[i]], s=200, facecolor="none", edgecolor="0.3", linewidth=1.0,
                           gid=f"front {label}")
            ax.annotate(style["name"] + (" (moving)" if moving[i] else ""), (x[i], y[i]), xytext=(name_x, name_y),
                        textcoords="data", ha=align, va="bottom", fontsize="x-small", color=style["color"],
                        gid=f"name {label}",  # above its bar
                        arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5})
    for k, name in enumerate(np.unique(group_of)):
        front = points[on_front & (group_of == name)].sort_values("task_min_mb")
        if front.empty:
            continue
        ax.step(front["task_min_mb"], front["final"], where="post", color="0.3", linewidth=1.2,
                linestyle=(":", "-.", "--", (0, (1, 3)))[k % 4], gid=f"pareto {name}".strip(),
                label="Pareto front" + (f" of {name}" if name else "") + ", intervals apart"
                + (" (within budget)" if not feasible.all() else ""))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set(xlabel="Memory a device needs to take part (MB: smallest task, estimated; bar to the largest)",
           ylabel="Test accuracy (last 10% of rounds)", title="Memory against accuracy (up and left is better)")
    bars = interval_note(points["seeds"]) if "seeds" in points else None
    notes = ["hollow: ran over budget" if not feasible.all() else None, f"error bars: {bars}" if bars else None,
             "(moving): not at its plateau" if moving.any() else None,
             *(f"no front{f' of {name}' if name else ''}: {count} within budget not at their plateau"
               for name, count in unsettled.items() if count)]
    outside_legend(ax, title="\n".join(n for n in notes if n) or None)
    return fig


@themed
def time_to_target(summary: pd.DataFrame, styles: dict, target: float,
                   fleet: pd.DataFrame | None = None) -> Figure | None:
    """Mean device time to reach the target, labelled with the speed-up against its FedAvg reference;
    None when no method reached it (a chart of empty bars says nothing)."""
    rows = summary[summary["seeds"] > 0]
    if rows.empty or rows["ttt"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))
    ttt = rows["ttt"].fillna(0)
    low = (rows["ttt"] - rows["ttt_lo"]).fillna(0).clip(lower=0)
    high = (rows["ttt_hi"] - rows["ttt"]).fillna(0).clip(lower=0)
    bars = ax.barh(y, ttt, xerr=[low, high], height=0.6, capsize=3,
                   color=[styles[label]["color"] for label in rows.index])
    partial = (rows["reached"] < rows["seeds"]) & rows["ttt"].notna()  # a mean of only the seeds that got there
    for bar, label in zip(bars, rows.index, strict=True):
        bar.set_hatch(("//" if styles[label].get("over_budget") else "") + ("xx" if partial[label] else ""))
        if partial[label]:
            bar.set_alpha(0.45)
    ends = ttt + high
    for i, (label, row) in enumerate(rows.iterrows()):
        if math.isnan(row["reached"]):
            text = "n/a (no device time)"
        elif math.isnan(row["ttt"]):
            text = "not reached"
        else:
            text = "speed-up n/a" if math.isnan(row["speedup"]) else speedup_text(
                row["speedup"], row["speedup_lo"], row["speedup_hi"])
            text += " (reference)" if label == row["reference"] else ""
            if row["reached"] < row["seeds"]:  # the bar is the mean of only the seeds that got there
                text += f", {int(row['reached'])}/{int(row['seeds'])} seeds reached it"
        ax.annotate(text, (ends.iloc[i], i), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize="small")
    ax.set_yticks(y, [styles[label]["name"] for label in rows.index])
    ax.invert_yaxis()
    ax.set_xlim(0, (ends.max() or 1.0) * 1.3)
    references = summary["reference"].dropna().unique()
    against = ("no FedAvg run: speed-up n/a" if not len(references) else
               f"speed-up against {styles[references[0]]['name']}" if len(references) == 1 else
               "speed-up against each suite's FedAvg")
    ax.set(xlabel="Cumulative device time (s, simulated; mean over seeds that reached it)",
           title=f"Device time to {target:.0%} accuracy ({against})")
    bars_note = interval_note(rows["reached"].dropna(), clipped="")
    notes = ["hatched //: ran over budget" if any(styles[label].get("over_budget") for label in rows.index) else None,
             "pale, crossed: reached it in only some seeds (k/n)" if partial.any() else None,
             f"error bars: {bars_note} of those that reached it" if bars_note else None,
             "speed-up only where every seed of both reached it, seed by seed (its interval in brackets)",
             time_assumptions(fleet)]
    ax.text(1.02, 1.0, "\n".join(n for n in notes if n), transform=ax.transAxes, va="top", fontsize="x-small",
            color="0.3", gid="notes")
    return fig
