"""The table printed at the end of a suite run: the columns of the report's summary (``reports.tables``)
that a first look needs, computed by the report's own code, so the two never disagree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.markdown import markdown_table

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["Label", "Accuracy, last 10% of rounds (%)", "Against the best", "Last round (%)",
           "Change over the last 20% (points)", "Peak measured (MB)", "Participation (%)", "Seeds"]


def summary_table(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """Per label of the suite folder: the headline accuracy (each seed's last 10% of evaluated
    rounds) with its interval, whether it can be told from the best, the last round, how far the
    last tenth moved, peak memory, participation and seeds; and a note naming the labels that are
    not at their plateau (the report has every note)."""
    # imported here: the report's code loads pandas, scipy and matplotlib (seconds), which a process
    # that only trains (a Ray worker, `harness list`) should not pay for
    from reports.load import load_suite
    from reports.stats import PLATEAU
    from reports.tables import display, summarize

    suite = load_suite(folder)
    target = suite.targets[0]  # the time to target is not among the columns
    summary, _ = summarize(suite, target)
    moving = list(summary.index[summary["moving"]])
    notes = [f"not at a plateau (moved more than {100 * PLATEAU:.1f} points over the last 20% of their evaluated "
             f"rounds; more rounds would change their accuracy): {', '.join(moving)}"] if moving else []
    return display(summary, target)[COLUMNS], notes


def format_table(table: pd.DataFrame, notes: list[str]) -> str:
    return "\n".join([markdown_table(list(table.columns), table.astype(str).values.tolist()),
                      *(f"note: {note}" for note in notes)])
