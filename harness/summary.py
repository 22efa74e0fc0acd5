"""The table printed at the end of a suite run: a first look before the report is rendered."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

from harness.fleet import MB
from harness.markdown import markdown_table
from harness.records import read_jsonl


def over_budget(folder: Path, run_dirs: list[str]) -> bool:
    """Whether any trained client of these runs exceeded its memory budget."""
    return any(c.get("over_budget") for d in run_dirs for c in read_jsonl(folder / d / "clients.jsonl"))


def summary_rows(folder: Path, runs: list[tuple[str, str]]) -> list[list[str]]:
    """Per label: final accuracy (mean over seeds), best, peak measured memory, participation; a
    label whose clients ran over their budgets is marked, since no device could reach its numbers."""
    by_label: dict[str, list[list[dict]]] = defaultdict(list)
    dirs: dict[str, list[str]] = defaultdict(list)
    for label, run_dir in runs:
        by_label[label].append(read_jsonl(folder / run_dir / "rounds.jsonl"))
        dirs[label].append(run_dir)
    rows = []
    for label, seeds in by_label.items():
        seeds = [rounds for rounds in seeds if rounds]
        evaluated = [[x["accuracy"] for x in r if x["accuracy"] is not None] for r in seeds]
        final = [accuracies[-1] for accuracies in evaluated if accuracies]  # each seed's last evaluated round
        best = [max(accuracies) for accuracies in evaluated if accuracies]
        peaks = [x["peak_tensor"] for r in seeds for x in r if x["peak_tensor"] is not None]
        share = [x["participated"] / x["devices"] for r in seeds for x in r]
        rows.append([
            f"{label} (over budget)" if over_budget(folder, dirs[label]) else label,
            f"{100 * mean(final):.1f}%" if final else "n/a",
            f"{100 * mean(best):.1f}%" if best else "n/a",
            f"{max(peaks) / MB:.2f}" if peaks else "n/a",
            f"{100 * mean(share):.0f}%" if share else "n/a",
            str(len(seeds)),
        ])
    return rows


def format_table(rows: list[list[str]]) -> str:
    head = ["method", "final acc", "best acc", "peak MB", "participation", "seeds"]
    return markdown_table(head, rows)
