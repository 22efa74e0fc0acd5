"""The comparative figures, one function each: they take the loaded DataFrames (or the summary)
and return the Figure, or None when there is nothing to plot, so tests can read the plotted data
back from the artists and the caller decides where to save."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from reports.load import CATEGORIES, TENSOR
from reports.stats import band, pareto_front
from reports.style import CATEGORY_COLORS, MB, outside_legend, themed

PEAK = TENSOR + "peak"
CI_NOTE = "line: mean over seeds\nshaded: 95% CI"


def plot_band(ax: Axes, rounds: pd.DataFrame, y: str, x: str, style: dict, ci: bool = True,
              **line: object) -> None:
    """Mean over seeds as a line, its 95% interval as a band where two or more seeds have data.
    Every quantity drawn this way is a fraction, so the band is clipped to [0, 1]: with two seeds
    the t-interval is wide and would otherwise stretch the axis far past what can happen."""
    b = band(rounds, y, x)
    markevery = max(1, len(b) // 12)
    ax.plot(b["x"], b["mean"], color=style["color"], marker=style["marker"], markersize=4,
            markevery=markevery, **line)
    if ci and (b["n"] > 1).any():
        ax.fill_between(b["x"], b["lo"].clip(0, 1), b["hi"].clip(0, 1), color=style["color"], alpha=0.12,
                        linewidth=0)


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


def _accuracy(rounds: pd.DataFrame, styles: dict, x: str, xlabel: str, title: str) -> Figure | None:
    data = rounds.dropna(subset=["accuracy"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, group in data.groupby("label"):
        plot_band(ax, group, "accuracy", x, styles[label], label=label)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if x == "round":
        round_axis(ax)
    ax.set(xlabel=xlabel, ylabel="Test accuracy", title=title)
    outside_legend(ax, title=CI_NOTE if data.groupby("label")["seed"].nunique().max() > 1 else None)
    return fig


@themed
def accuracy_vs_round(rounds: pd.DataFrame, styles: dict) -> Figure | None:
    return _accuracy(rounds, styles, "round", "Round", "Accuracy by round")


@themed
def accuracy_vs_time(rounds: pd.DataFrame, styles: dict) -> Figure | None:
    return _accuracy(rounds, styles, "wall_time", "Cumulative wall time (s; mean over seeds)",
                     "Accuracy by wall time")


@themed
def participation(rounds: pd.DataFrame, styles: dict) -> Figure | None:
    devices = rounds["devices"].where(rounds["devices"] > 0)
    data = rounds.assign(eligible_share=rounds["eligible"] / devices,
                         participated_share=rounds["participated"] / devices)
    if data[["eligible_share", "participated_share"]].isna().all().all():
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, column, title in zip(axes, ("eligible_share", "participated_share"),
                                 ("Eligible (a task fits the budget)", "Took part (trained, aggregated)"),
                                 strict=True):
        for label, group in data.groupby("label"):
            plot_band(ax, group, column, "round", styles[label], ci=False, label=label)
        ax.set(xlabel="Round", title=title)
        round_axis(ax)
    axes[0].set(ylabel="Devices of the fleet (mean over seeds)", ylim=(-0.02, 1.05))
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    outside_legend(axes[1])
    return fig


def fleet_panel(bx: Axes, fleet: pd.DataFrame, peaks: dict[str, float], styles: dict) -> None:
    """Share of the fleet whose budget is at least each memory level, with each method's peak
    dashed across it: where a line meets the curve reads as the share of devices it fits. Each
    seed draws its own fleet; they are pooled."""
    budgets = fleet["budget"].to_numpy() / MB
    levels = np.linspace(0, bx.get_ylim()[1], 600)
    share = (budgets[None, :] >= levels[:, None]).mean(axis=1)
    bx.plot(share, levels, color="0.35", linewidth=1.5, gid="fleet")
    bx.fill_betweenx(levels, 0, share, color="0.35", alpha=0.15, linewidth=0)
    for label, peak in peaks.items():
        bx.axhline(peak, color=styles[label]["color"], linestyle="--", linewidth=1.3)
    bx.set_xlim(0, 1.02)
    bx.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    seeds = fleet["seed"].nunique()
    bx.set(xlabel="Devices with at least this budget",
           title="Fleet budgets" + (f" ({seeds} seeds pooled)" if seeds > 1 else ""))


@themed
def memory_by_method(clients: pd.DataFrame, fleet: pd.DataFrame, styles: dict) -> Figure | None:
    """Stacked categories of the client with the highest peak, every client's peak as a dot, and
    beside it the fleet's budgets on the same MB axis."""
    trained = clients.dropna(subset=[PEAK])
    if trained.empty:
        return None
    labels = sorted(clients["label"].unique())
    panels = 2 if len(fleet) else 1
    width = max(6.0, 0.9 * len(labels) + 3.5) + 2.5 * (panels - 1)
    fig, axes = plt.subplots(1, panels, figsize=(width, 4.8), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": [max(3, len(labels)), 2][:panels]})
    ax = axes[0, 0]
    tops = trained.loc[trained.groupby("label")[PEAK].idxmax()].set_index("label").reindex(labels)
    stacked_bars(ax, tops)
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    per_client = trained.groupby(["label", "seed", "device"])[PEAK].max() / MB
    for i, label in enumerate(sorted(trained["label"].unique())):
        peaks = per_client.loc[label].to_numpy()
        ax.scatter(labels.index(label) + rng.uniform(-0.2, 0.2, len(peaks)), peaks, s=14, zorder=3,
                   color=styles[label]["color"], edgecolor="black", linewidth=0.5, gid=label,
                   label="each client's peak" if i == 0 else None)
    tilt = len(labels) > 4
    ax.set_xticks(range(len(labels)), labels, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    for tick, label in zip(ax.get_xticklabels(), labels, strict=True):
        tick.set_color(styles[label]["color"])
    ax.set(ylabel="Peak training memory (MB, measured tensors)", title="Peak memory by method")
    ax.set_ylim(0, max(tops[PEAK].max(), fleet["budget"].max() if len(fleet) else 0) / MB * 1.12)
    handles, names = ax.get_legend_handles_labels()
    if panels == 2:
        fleet_panel(axes[0, 1], fleet, (tops[PEAK] / MB).dropna().to_dict(), styles)
        handles.append(plt.Line2D([], [], color="0.3", linestyle="--"))
        names.append("method's peak")
    outside_legend(axes[0, -1], handles=handles[::-1], labels=names[::-1])
    return fig


@themed
def memory_vs_accuracy(summary: pd.DataFrame, styles: dict) -> Figure | None:
    """Final accuracy against peak memory; the Pareto front joins the methods no other beats."""
    points = summary.dropna(subset=["peak_mb", "final"])
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, row in points.iterrows():
        ci = 0 if math.isnan(row["final_ci"]) else row["final_ci"]
        yerr = [[min(ci, row["final"])], [min(ci, 1 - row["final"])]]  # clipped to [0, 1]
        ax.errorbar(row["peak_mb"], row["final"], yerr=yerr, fmt=styles[label]["marker"],
                    color=styles[label]["color"], markersize=8, capsize=3, label=label)
    front = points[pareto_front(points["peak_mb"], points["final"])].sort_values("peak_mb")
    ax.step(front["peak_mb"], front["final"], where="post", color="0.3", linestyle=":", linewidth=1.2,
            label="Pareto front")
    ax.scatter(front["peak_mb"], front["final"], s=220, facecolor="none", edgecolor="0.3", linewidth=1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set(xlabel="Peak training memory (MB)", ylabel="Final test accuracy",
           title="Memory against accuracy (up and left is better)")
    outside_legend(ax)
    return fig


@themed
def time_to_target(summary: pd.DataFrame, styles: dict, target: float,
                   reference: str | None) -> Figure | None:
    """Mean wall time to reach the target, labelled with the speed-up against the FedAvg reference."""
    rows = summary[summary["seeds"] > 0]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))
    ttt, ci = rows["ttt"].fillna(0), rows["ttt_ci"].fillna(0)
    ax.barh(y, ttt, xerr=[np.minimum(ci, ttt), ci], height=0.6, capsize=3,
            color=[styles[label]["color"] for label in rows.index])
    ends = ttt + ci
    for i, (label, row) in enumerate(rows.iterrows()):
        if math.isnan(row["ttt"]):
            text = "not reached"
        else:
            text = "n/a" if math.isnan(row["speedup"]) else f"×{row['speedup']:.2f}"
            text += " (reference)" if label == reference else ""
        ax.annotate(text, (ends.iloc[i], i), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize="small")
    ax.set_yticks(y, rows.index)
    ax.invert_yaxis()
    ax.set_xlim(0, (ends.max() or 1.0) * 1.3)
    against = f"speed-up against {reference}" if reference else "no FedAvg run: speed-up n/a"
    ax.set(xlabel="Cumulative wall time (s; mean over seeds that reached it)",
           title=f"Time to {target:.0%} accuracy ({against})")
    return fig
