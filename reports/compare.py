"""Several suite folders as one suite, so that one report compares them.

Labels that two suites share are prefixed with their suite's name; the configuration keys in which
the suites differ are listed; suites on different data or models are refused unless the caller
allows it, since their accuracies and memory do not measure the same thing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.load import ReportError, Suite, load_suite
from reports.tables import flatten_config

SAME = ("data.name", "model.name", "model.width")  # what must agree for numbers to be comparable


def differences(suites: list[Suite], names: list[str]) -> pd.DataFrame:
    """The config keys whose values differ between the suites (methods apart), one column each."""
    configs = [dict(flatten_config(s.config)) for s in suites]
    keys = sorted({k for c in configs for k in c})
    rows = [[key, *(c.get(key, "–") for c in configs)] for key in keys
            if len({c.get(key) for c in configs}) > 1]
    return pd.DataFrame(rows, columns=["Key", *names])


def mixed(compared: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of ``differences`` in which the suites measure unlike things (data set, model)."""
    return compared[compared["Key"].isin(SAME)] if compared is not None else pd.DataFrame(columns=["Key"])


def _relabel(suite: Suite, name: str, clashing: set[str]) -> Suite:
    """``suite`` under ``name``, its clashing labels prefixed by that name."""
    rename = {label: f"{name}/{label}" for label in suite.labels if label in clashing}

    def relabelled(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(suite=name)
        return frame.assign(label=frame["label"].replace(rename)) if "label" in frame else frame

    manifests = {(rename.get(label, label), seed): m for (label, seed), m in suite.manifests.items()}
    return Suite(suite.path, name, suite.info, relabelled(suite.runs), manifests,
                 relabelled(suite.rounds), relabelled(suite.clients), suite.fleet.assign(suite=name),
                 [f"{name}: {note}" for note in suite.notes])


def load_suites(paths: list[str | Path], allow_mixed: bool = False) -> Suite:
    """One suite (``paths`` of one) or several merged into one."""
    suites = [load_suite(p) for p in paths]
    if len(suites) == 1:
        return suites[0]
    names = [s.name for s in suites]
    if len(set(names)) < len(names):  # one suite file run into several folders: tell them apart by folder
        names = [f"{s.path.parent.name}/{s.name}" for s in suites]
    if len(set(names)) < len(names):
        raise ReportError(f"cannot tell the suites apart by name or folder ({', '.join(map(str, paths))})")
    compared = differences(suites, names)
    unlike = mixed(compared)
    if len(unlike) and not allow_mixed:
        what = "; ".join(f"{row.Key}: {' vs '.join(map(str, row[1:]))}" for row in unlike.itertuples(index=False))
        raise ReportError(f"the suites differ in data set or model ({what}); pass --allow-mixed to compare them")
    seen: dict[str, int] = {}
    for s in suites:
        for label in s.labels:
            seen[label] = seen.get(label, 0) + 1
    clashing = {label for label, n in seen.items() if n > 1}
    parts = [_relabel(s, name, clashing) for s, name in zip(suites, names, strict=True)]
    frames = {key: pd.concat([getattr(p, key) for p in parts], ignore_index=True)
              for key in ("runs", "rounds", "clients", "fleet")}
    return Suite(
        path=suites[0].path, name=" + ".join(names), info={"suites": [s.info for s in suites]},
        runs=frames["runs"], manifests={k: v for p in parts for k, v in p.manifests.items()},
        rounds=frames["rounds"], clients=frames["clients"], fleet=frames["fleet"],
        notes=[note for p in parts for note in p.notes], compared=compared,
    )
