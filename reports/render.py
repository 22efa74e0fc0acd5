"""Render every figure and table of a suite folder into one output folder."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports import figures, stages
from reports.compare import load_suites, mixed
from reports.html import index_html
from reports.load import ReportError, Suite
from reports.markdown import summary_markdown
from reports.page import FIGURES, SUMMARY_TEXT, Page, Section
from reports.style import FORMATS, method_styles, replace_file, save
from reports.tables import (
    config_table,
    display,
    methods_table,
    over_budget_names,
    provenance_table,
    summarize,
)

STAGE_FIGURES = ("neulite_stage_memory", "neulite_stage_accuracy")
PAGES = ("index.html", "summary.md", "summary.csv")


@dataclass
class Report:
    out: Path
    files: list[Path]
    notes: list[str]


def stage_sections(clients: pd.DataFrame) -> list[Section]:
    """NeuLite's peaks per stage as a table, when some label trains in stages."""
    table = stages.stage_table(clients)
    if table is None:
        return []
    return [Section("Peak memory per stage", "For labels that train in stages (NeuLite): each stage's estimated "
                    "peak (what a device needs to take part), its highest measured peak, the share of the fleet "
                    "it fits (mean over rounds and seeds) and the clients it trained; a label's peak over all "
                    "stages is its largest row.", table)]


def render(suite_dirs: str | Path | list[str | Path], out: str | Path | None = None, target: float | None = None,
           allow_mixed: bool = False, labels: list[str] | None = None) -> Report:
    """Read the records of one suite folder or several (compared in one report), write the figures
    (PNG and SVG), summary.md, summary.csv and index.html into ``out`` (default: the suite's
    ``report`` folder; required for several suites) and return what was written and what is missing.
    ``target`` (time to target's accuracy) defaults to the suite's ``report.target``; ``labels``
    draws only those labels (every table and figure of the report, over them alone)."""
    dirs = suite_dirs if isinstance(suite_dirs, list) else [suite_dirs]
    if len(dirs) > 1 and out is None:
        raise ReportError("several suites: give the output folder (-o OUT)")
    suite = load_suites(dirs, allow_mixed)
    if labels:
        suite = suite.only(labels)
    if target is None:
        if len(suite.targets) > 1:
            raise ReportError(f"the suites ask for different targets (report.target: "
                              f"{', '.join(f'{t:g}' for t in suite.targets)}); give one with --target")
        target = suite.targets[0]
    out = Path(out) if out else suite.path / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot create the report folder {out}: {err.strerror or err}") from None
    with RenderLock(out):  # a second render of this folder waits for the first
        for name in PAGES:  # an interrupted render leaves no page: figures without one read as unfinished
            (out / name).unlink(missing_ok=True)
        return _render(suite, out, target)


def _render(suite: Suite, out: Path, target: float) -> Report:
    summary, notes = summarize(suite, target)
    notes = suite.notes + notes
    styles = method_styles(suite.methods)
    names = over_budget_names(summary)
    for label, style in styles.items():
        style.update(name=names[label], over_budget=names[label] != label)
    per_suite = suite.suites if suite.compared is not None else None  # suites compared: a panel each
    built = {
        "accuracy_vs_round": lambda: figures.accuracy_vs_round(suite.rounds, styles, per_suite),
        "accuracy_by_family": lambda: figures.accuracy_by_family(suite.rounds, styles, suite.families),
        "accuracy_vs_time": lambda: figures.accuracy_vs_time(suite.rounds, styles, suite.fleet, per_suite),
        "device_time_split": lambda: figures.device_time_split(summary, styles, suite.fleet),
        "memory_by_method": lambda: figures.memory_by_method(suite.clients, suite.fleet, styles),
        "participation": lambda: figures.participation(suite.rounds, suite.clients, styles),
        "memory_vs_accuracy": lambda: figures.memory_vs_accuracy(summary, styles,
                                                                 suite.suites if len(mixed(suite.compared)) else None),
        "neulite_stage_memory": lambda: stages.neulite_stage_memory(suite.clients, styles),
        "neulite_stage_accuracy": lambda: stages.neulite_stage_accuracy(suite.rounds, styles),
        "time_to_target": lambda: figures.time_to_target(summary, styles, target, suite.fleet),
    }
    files, shown = [], []
    has_neulite = (suite.runs["method"] == "neulite").any()
    optional = {"accuracy_by_family", *(() if has_neulite else STAGE_FIGURES)}  # absent: not a gap in the records
    expected = set(FIGURES) - optional
    for stem in FIGURES:
        fig = built[stem]()
        if fig is None:
            for ext in FORMATS:  # never leave a stale figure from an earlier render
                (out / f"{stem}.{ext}").unlink(missing_ok=True)
            if stem in expected:
                notes.append(f"{stem}: nothing to plot yet; not rendered")
            continue
        files += save(fig, out, stem)
        shown.append(stem)
    if suite.fleet.empty:
        notes.append("no fleet in any manifest: budgets not drawn")
    configuration = (Section("Suites compared", "The configuration keys in which the suites differ.",
                             suite.compared) if suite.compared is not None else
                     Section("Configuration", "The suite config as dotted keys (`--set` syntax).", config_table(suite)))
    page = Page(
        title=f"Report: suite {suite.name}",
        summary=Section("Summary", SUMMARY_TEXT, display(summary, target)),
        notes=notes,
        figures=shown,
        details=[Section("Methods", "", methods_table(suite)), *stage_sections(suite.clients), configuration,
                 Section("Provenance", "", provenance_table(suite))],
    )
    files.append(replace_file(out / "summary.csv", summary.to_csv))
    for name, text in (("summary.md", summary_markdown(page)), ("index.html", index_html(page))):  # the index last
        files.append(replace_file(out / name, lambda tmp, text=text: tmp.write_text(text)))
    return Report(out=out, files=files, notes=notes)


class RenderLock:
    """One render at a time into a folder (an OS lock on ``out/.lock``, dropped when its holder dies)."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self._fd = -1

    def __enter__(self) -> RenderLock:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)
