"""NeuLite's per-stage figures, from the records that carry a ``stage`` key: memory per stage and
each evaluated model's accuracy over rounds with the stages marked. One panel per such label, so
ablations sit side by side."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from reports.figures import PEAK, band_note, megabytes, plot_band, round_axis, stacked_bars
from reports.load import ESTIMATE
from reports.stats import fits_per_round
from reports.style import MB, outside_legend, themed

LINESTYLES = ("-", "--", ":", "-.")


def _staged(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Rows with a stage (and the given columns), or an empty frame when no run has stages."""
    if "stage" not in frame:
        return frame.iloc[0:0]
    return frame.dropna(subset=["stage", *columns])


def stage_name(stage: float) -> str:
    return f"{stage:g}"


def per_label_panels(staged: pd.DataFrame, panel_width: float, height: float,
                     styles: dict) -> tuple[Figure, list[tuple[plt.Axes, pd.DataFrame]]]:
    """One panel per label (ablations side by side, shared y axis), titled in the label's colour."""
    labels = sorted(staged["label"].unique())
    fig, axes = plt.subplots(1, len(labels), figsize=(panel_width * len(labels) + 2.2, height), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, label in zip(axes[0], labels, strict=True):
        ax.set_title(styles[label]["name"], color=styles[label]["color"])
    return fig, [(ax, staged[staged["label"] == label]) for ax, label in zip(axes[0], labels, strict=True)]


@themed
def neulite_stage_memory(clients: pd.DataFrame, styles: dict) -> Figure | None:
    """Per stage, the categories of the client with the highest measured peak."""
    staged = _staged(clients, PEAK)
    if staged.empty:
        return None
    fig, panels = per_label_panels(staged, 3.6, 4.4, styles)
    for ax, rows in panels:
        tops = rows.loc[rows.groupby("stage")[PEAK].idxmax()].sort_values("stage")
        stacked_bars(ax, tops)
        ax.set_xticks(range(len(tops)), [stage_name(s) for s in tops["stage"]])
        ax.set_xlabel("Stage")
        ax.set_ylim(0, staged[PEAK].max() / MB * 1.12)
    first, last = panels[0][0], panels[-1][0]
    first.set_ylabel("Peak training memory (MB, measured tensors)")
    handles, names = first.get_legend_handles_labels()
    outside_legend(last, handles=handles[::-1], labels=names[::-1])
    fig.suptitle("NeuLite: peak memory per stage (client with the highest peak)", fontweight="bold")
    return fig


def stage_table(clients: pd.DataFrame) -> pd.DataFrame | None:
    """Per label with stages and per stage: the task's estimated peak (what a device needs), the
    highest measured peak, the share of the fleet it fits (mean over rounds and seeds) and the
    clients trained; None when no record has a stage. A label's peak over all stages is its
    largest row."""
    staged = _staged(clients)
    if staged.empty:
        return None

    def mb(value: float) -> str:
        return megabytes(value / MB) if pd.notna(value) else "–"

    rows = []
    for (label, stage), group in staged.groupby(["label", "stage"], sort=True):
        trained = group[group["status"] == "trained"] if "status" in group else group.iloc[0:0]
        fits = fits_per_round(group)["fits"].mean()
        rows.append({"Label": label, "Stage": stage_name(stage), "Estimated peak (MB)": mb(group[ESTIMATE].max()),
                     "Measured peak (MB)": mb(trained[PEAK].max()) if len(trained) else "none trained",
                     "Fleet that fits (%)": f"{100 * fits:.1f}" if pd.notna(fits) else "–",
                     "Clients trained": len(trained)})
    return pd.DataFrame(rows)


def _stage_spans(rounds: pd.DataFrame) -> list[tuple[float, float, float]]:
    """(first round, last round, stage) for each run of rounds in one stage (most common over seeds)."""
    per_round = rounds.groupby("round")["stage"].agg(lambda s: s.mode().iloc[0]).sort_index()
    spans: list[tuple[float, float, float]] = []
    for r, stage in per_round.items():
        if spans and spans[-1][2] == stage:
            spans[-1] = (spans[-1][0], r, stage)
        else:
            spans.append((r, r, stage))
    return spans


def stage_colors(stages: pd.Series) -> dict[float, tuple[float, float, float]]:
    """One colour per stage number, the same in every panel."""
    ids = sorted(stages.dropna().unique())
    return dict(zip(ids, sns.color_palette("crest", len(ids)), strict=True))


def stage_strip(ax: plt.Axes, spans: list[tuple[float, float, float]], colors: dict) -> None:
    """Every span of rounds as a band in its stage's colour along the top of ``ax``: exact however
    many spans there are (no label is thinned out)."""
    for first, last, stage in spans:
        ax.axvspan(first - 0.5, last + 0.5, ymin=0.955, ymax=1.0, color=colors[stage], linewidth=0,
                   gid=f"stage {stage_name(stage)}")


@themed
def neulite_stage_accuracy(rounds: pd.DataFrame, styles: dict) -> Figure | None:
    """Accuracy of every evaluated model (e.g. "stage" and "full") by round, with a strip of the
    stage each round trained along the top."""
    staged = _staged(rounds)
    models = [c for c in staged.columns if c.startswith("evals.") and c.endswith(".accuracy")
              and staged[c].notna().any()]
    if staged.empty or not models:
        return None
    fig, panels = per_label_panels(staged, 5.0, 4.2, styles)
    colors = stage_colors(staged["stage"])
    strip = [plt.Rectangle((0, 0), 1, 1, color=c, label=f"stage {stage_name(s)}") for s, c in colors.items()]
    for ax, rows in panels:
        label = rows["label"].iloc[0]
        for i, model in enumerate(models):
            plot_band(ax, rows, model, "round", styles[label], linestyle=LINESTYLES[i % len(LINESTYLES)],
                      label=model.removeprefix("evals.").removesuffix(".accuracy") + " model")
        stage_strip(ax, _stage_spans(rows), colors)
        ax.set_xlabel("Round")
        round_axis(ax)
    first, last = panels[0][0], panels[-1][0]
    first.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    first.set_ylabel("Test accuracy")
    handles, names = last.get_legend_handles_labels()
    outside_legend(last, handles=handles + strip, labels=names + [h.get_label() for h in strip],
                   title=band_note(staged, models))
    fig.suptitle("NeuLite: accuracy by round, per evaluated model (strip: the stage trained)", fontweight="bold")
    return fig
