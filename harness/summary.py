"""The table printed at the end of a suite run: a first look before the report is rendered, with
the report's own statistics (``reports.stats``), so the two never disagree."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from statistics import mean

import pandas as pd

from harness.fleet import MB
from harness.markdown import markdown_table
from harness.records import read_jsonl
from reports.stats import PLATEAU, interval, last_rounds, mean_ci, plateau_change


def over_budget(folder: Path, run_dirs: list[str]) -> bool:
    """Whether any trained client of these runs exceeded its memory budget."""
    return any(c.get("over_budget") for d in run_dirs for c in read_jsonl(folder / d / "clients.jsonl"))


def _percent(values: list[float]) -> str:
    """Mean over seeds with its interval (reports.stats.interval's: a t-interval from 3 seeds)."""
    centre, lo, hi, n = interval(values, 0.0, 1.0)
    if not n:
        return "n/a"
    return f"{100 * centre:.1f}%" + ("" if math.isnan(lo) else f" ({100 * lo:.1f}-{100 * hi:.1f})")


def summary_rows(folder: Path, runs: list[tuple[str, str]]) -> list[list[str]]:
    """Per label, as the report computes them: accuracy as each seed's mean over its last 10% of
    evaluated rounds with its interval over seeds, the last round beside it, how much the last tenth
    moved from the tenth before (more than 1.5 points: not at a plateau), peak measured memory and
    participation; a label whose clients ran over their budgets is marked, since no device could
    reach its numbers."""
    by_label: dict[str, list[list[dict]]] = defaultdict(list)
    dirs: dict[str, list[str]] = defaultdict(list)
    for label, run_dir in runs:
        by_label[label].append(read_jsonl(folder / run_dir / "rounds.jsonl"))
        dirs[label].append(run_dir)
    rows = []
    for label, seeds in by_label.items():
        seeds = [rounds for rounds in seeds if rounds]
        evaluated = [pd.Series([x["accuracy"] for x in r if x["accuracy"] is not None], dtype=float) for r in seeds]
        evaluated = [accuracies for accuracies in evaluated if len(accuracies)]
        change = mean_ci(plateau_change(a) for a in evaluated)[0]
        peaks = [x["peak_tensor"] for r in seeds for x in r if x["peak_tensor"] is not None]
        share = [x["participated"] / x["devices"] for r in seeds for x in r]
        rows.append([
            f"{label} (over budget)" if over_budget(folder, dirs[label]) else label,
            _percent([last_rounds(a).mean() for a in evaluated]),
            _percent([a.iloc[-1] for a in evaluated]),
            "n/a" if math.isnan(change) else f"{100 * change:+.1f}" + (" (rising)" if change > PLATEAU else ""),
            f"{max(peaks) / MB:.2f}" if peaks else "n/a",
            f"{100 * mean(share):.0f}%" if share else "n/a",
            str(len(seeds)),
        ])
    return rows


def format_table(rows: list[list[str]]) -> str:
    head = ["method", "accuracy, last 10% of rounds", "last round", "change, last 20% (points)", "peak MB",
            "participation", "seeds"]
    return markdown_table(head, rows)
