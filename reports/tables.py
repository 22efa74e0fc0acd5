"""The summary table (one row per method label) and the suite's configuration, as numbers for the
figures and as display strings for summary.md and index.html, so both show the same values."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from reports.load import TENSOR, Suite
from reports.stats import mean_ci, time_to_target
from reports.style import MB

DASH = "–"


def reference_label(suite: Suite) -> str | None:
    """The FedAvg run speed-ups are measured against: label "fedavg", else the first fedavg method."""
    if "fedavg" in suite.labels:
        return "fedavg"
    fedavg = sorted(suite.runs.loc[suite.runs["method"] == "fedavg", "label"].unique())
    return fedavg[0] if fedavg else None


def _span(values: list[int]) -> str:
    """"5", or "3–5" when seeds recorded different numbers of rounds."""
    if not values:
        return "0"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}{DASH}{values[-1]}"


def _label_row(suite: Suite, label: str, target: float, notes: list[str]) -> dict[str, Any]:
    rounds = suite.rounds[suite.rounds["label"] == label]
    seeds = [g for _, g in rounds.groupby("seed")]
    accurate = [g.dropna(subset=["accuracy"]).sort_values("round") for g in seeds]
    final, final_ci, _ = mean_ci([g["accuracy"].iloc[-1] for g in accurate if len(g)])
    best, best_ci, _ = mean_ci([g["accuracy"].max() for g in accurate if len(g)])
    ttt, ttt_ci, reached = mean_ci([time_to_target(g, target) for g in seeds])
    peak = suite.clients.loc[suite.clients["label"] == label, TENSOR + "peak"].max()
    share = (rounds["participated"] / rounds["devices"].where(rounds["devices"] > 0)).mean()
    recorded = sorted({len(g) for g in seeds})
    if seeds and not any(len(g) for g in accurate):
        notes.append(f"{label}: no accuracy recorded yet")
    if seeds and math.isnan(peak):
        notes.append(f"{label}: no client trained, so no measured memory")
    if 0 < reached < len(seeds):
        notes.append(f"{label}: reached {target:.0%} in {reached} of {len(seeds)} seeds; time is their mean")
    if len(set(recorded)) > 1:
        notes.append(f"{label}: seeds recorded {recorded[0]} to {recorded[-1]} rounds; "
                     "final accuracy mixes them")
    return {
        "label": label,
        "method": suite.runs.loc[suite.runs["label"] == label, "method"].iloc[0],
        "seeds": len(seeds),
        "rounds": _span(recorded),
        "final": final, "final_ci": final_ci, "best": best, "best_ci": best_ci,
        "peak_mb": peak / MB, "participation": share,
        "ttt": ttt, "ttt_ci": ttt_ci, "reached": reached,
        "up_mb": mean_ci([g["bytes_up"].sum() / MB for g in seeds])[0],
        "down_mb": mean_ci([g["bytes_down"].sum() / MB for g in seeds])[0],
    }


def summarize(suite: Suite, target: float) -> tuple[pd.DataFrame, list[str]]:
    """One row of numbers per label (index), and notes on what the numbers lack."""
    notes: list[str] = []
    rows = [_label_row(suite, label, target, notes) for label in suite.labels]
    summary = pd.DataFrame(rows).set_index("label")
    reference = reference_label(suite)
    base = summary.loc[reference, "ttt"] if reference else math.nan
    summary["speedup"] = base / summary["ttt"]
    if reference is None:
        notes.append("no FedAvg run (label or method 'fedavg'): speed-up n/a")
    elif math.isnan(base):
        notes.append(f"{reference} has not reached {target:.0%}: speed-up n/a")
    return summary, notes


def _mean_ci(mean: float, ci: float, scale: float = 1.0, digits: int = 1) -> str:
    if math.isnan(mean):
        return DASH
    return f"{mean * scale:.{digits}f}" + ("" if math.isnan(ci) else f" ± {ci * scale:.{digits}f}")


def _percent(summary: pd.DataFrame, column: str) -> list[str]:
    return [_mean_ci(m, c, 100) for m, c in zip(summary[column], summary[column + "_ci"], strict=True)]


def _time(row: pd.Series) -> str:
    if row["seeds"] == 0:
        return DASH
    if row["reached"] == 0:
        return "not reached"
    partial = f" ({row['reached']}/{row['seeds']} seeds)" if row["reached"] < row["seeds"] else ""
    return _mean_ci(row["ttt"], row["ttt_ci"]) + partial


def display(summary: pd.DataFrame, target: float, reference: str | None) -> pd.DataFrame:
    """The summary as the strings a reader sees: %, MB, s, mean ± 95% CI, n/a."""
    def number(value: float, digits: int = 2) -> str:
        return DASH if math.isnan(value) else f"{value:.{digits}f}"

    return pd.DataFrame({
        "Label": summary.index,
        "Method": summary["method"],
        "Seeds": summary["seeds"].astype(str),
        "Rounds": summary["rounds"],
        "Final accuracy (%)": _percent(summary, "final"),
        "Best accuracy (%)": _percent(summary, "best"),
        "Peak memory (MB)": summary["peak_mb"].map(number),
        "Participation (%)": (summary["participation"] * 100).map(lambda v: number(v, 1)),
        f"Time to {target:.0%} (s)": [_time(row) for _, row in summary.iterrows()],
        f"Speed-up vs {reference or 'FedAvg'}": summary["speedup"].map(
            lambda v: "n/a" if math.isnan(v) else f"×{v:.2f}"),
        "Bytes up (MB)": summary["up_mb"].map(number),
        "Bytes down (MB)": summary["down_mb"].map(number),
    }).reset_index(drop=True)


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        elif key != "methods":
            plain = isinstance(value, str | int | float) and not isinstance(value, bool)
            rows.append((f"{prefix}{key}", str(value) if plain else json.dumps(value)))
    return rows


def config_table(suite: Suite) -> pd.DataFrame:
    """The suite config (methods apart), flattened to dotted keys as in ``--set``."""
    return pd.DataFrame(_flatten(suite.config), columns=["Key", "Value"])


def methods_table(suite: Suite) -> pd.DataFrame:
    """Each label's method and its resolved parameters (from the first manifest that has them)."""
    rows = []
    for label in suite.labels:
        runs = suite.runs[suite.runs["label"] == label]
        params = next((suite.manifests[label, s].get("method_params") for s in runs["seed"]
                       if suite.manifests.get((label, s), {}).get("method_params") is not None), None)
        rows.append((label, runs["method"].iloc[0], ", ".join(str(s) for s in runs["seed"]),
                     DASH if params is None else json.dumps(params, sort_keys=True)))
    return pd.DataFrame(rows, columns=["Label", "Method", "Seeds", "Parameters"])


def provenance_table(suite: Suite) -> pd.DataFrame:
    """Where the numbers come from: versions, commit, start time, device, data and model."""
    manifest = next((m for m in suite.manifests.values() if m), {})
    source = suite.info or manifest
    rows = [("suite", suite.name), ("records", str(suite.path)), ("started", source.get("started")),
            ("git commit", source.get("git_commit"))]
    rows += [(name, version) for name, version in (source.get("versions") or {}).items()]
    devices = sorted({m.get("device") for m in suite.manifests.values() if m.get("device")})
    rows.append(("device", ", ".join(devices) or None))
    data, model = manifest.get("data") or {}, manifest.get("model") or {}
    if data:
        rows.append(("data", f"{data.get('name')}: {data.get('train')} train, {data.get('test')} test, "
                             f"{data.get('num_classes')} classes, input {data.get('input_shape')}"))
    if model:
        rows.append(("model", f"{model.get('name')} (width {model.get('width')}, "
                              f"{model.get('parameters')} parameters)"))
    return pd.DataFrame([(k, DASH if v is None else str(v)) for k, v in rows], columns=["Key", "Value"])


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency); pipes in cells are escaped."""
    def cells(values: Any) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(frame.columns), "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + [cells(row) for row in frame.itertuples(index=False)])
