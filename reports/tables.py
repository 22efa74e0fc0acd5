"""The summary table (one row per method label) and the suite's configuration, as numbers for the
figures and as display strings for summary.md and index.html, so both show the same values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from reports.load import ESTIMATE, TENSOR, Suite, load_suite
from reports.stats import (
    INTERVAL_NAMES,
    PLATEAU,
    fits_per_round,
    interval,
    interval_kind,
    last_rounds,
    mean_ci,
    near_chance,
    overlaps,
    plateau_change,
    time_to_target,
)
from reports.style import MB, speedup_text

DASH = "–"


def references(suite: Suite) -> dict[str, str | None]:
    """Per label, the FedAvg run of its own suite that its speed-up is measured against: the label
    "fedavg" (prefixed by its suite when suites are compared), else the first whose method is fedavg."""
    out: dict[str, str | None] = {}
    for _, runs in suite.runs.groupby("suite"):
        labels = sorted(runs["label"].unique())
        named = [label for label in labels if label.rpartition("/")[2] == "fedavg"]
        fedavg = named or sorted(runs.loc[runs["method"] == "fedavg", "label"].unique())
        out.update(dict.fromkeys(labels, fedavg[0] if fedavg else None))
    return out


def _span(values: list[int]) -> str:
    """"5", or "3–5" when seeds recorded different numbers of rounds."""
    if not values:
        return "0"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}{DASH}{values[-1]}"


def _fits(clients: pd.DataFrame) -> float:
    """Share of the fleet whose budget covers the task offered to it (its estimated peak), mean
    over rounds and seeds: who can take part, whether or not the method respected budgets."""
    if clients.empty:
        return math.nan
    return float(fits_per_round(clients)["fits"].mean())


def _dropped(clients: pd.DataFrame) -> float:
    """Share of selected clients dropped at the round deadline (stragglers)."""
    status = clients["status"] if "status" in clients else pd.Series(dtype=object)
    selected = status.isin(["trained", "straggler"]).sum()
    return float((status == "straggler").sum() / selected) if selected else math.nan


def _over_budget(trained: pd.DataFrame) -> float:
    """Share of trained clients whose measured peak exceeded their budget."""
    if trained.empty or "over_budget" not in trained:
        return math.nan if trained.empty else 0.0
    return float(trained["over_budget"].fillna(False).astype(bool).mean())


LOSS_FALL = 0.75  # training loss "fell": its last rounds' mean at most this share of round 1's


def _stuck_at_chance(suite: Suite, label: str, accurate: list[pd.DataFrame], trained: pd.DataFrame) -> str | None:
    """A note when the evaluated accuracy ends at chance (mean over seeds of each seed's last rounds)
    while the clients' training loss fell: what is evaluated is not what trains. It names the cause
    the method recorded (``chance_cause`` in its manifests), if any."""
    manifests = [m for (name, _), m in sorted(suite.manifests.items()) if name == label]
    data = manifests[0].get("data", {}) if manifests else {}
    classes, tests = data.get("num_classes"), data.get("test")
    if not classes or not tests or "train_loss" not in trained or not any(len(g) for g in accurate):
        return None
    ending = mean_ci(last_rounds(g["accuracy"]).mean() for g in accurate if len(g))[0]
    losses = trained.groupby("round")["train_loss"].mean().dropna()
    if not near_chance(ending, classes, tests) or len(losses) < 2:
        return None
    first, last = float(losses.iloc[0]), float(last_rounds(losses).mean())
    if not last <= LOSS_FALL * first:
        return None
    cause = next((m["chance_cause"] for m in manifests if m.get("chance_cause")), "")
    return (f"{label}: evaluated accuracy stays at chance ({ending:.1%} over its last rounds; guessing one of "
            f"{classes} classes scores {1 / classes:.0%}) while its clients' training loss fell from {first:.2f} "
            f"to {last:.2f}: the evaluated model does not show what training learned. "
            + (f"Likely cause: {cause}." if cause else "The method records no likely cause."))


def _label_row(suite: Suite, label: str, target: float, notes: list[str]) -> dict[str, Any]:
    rounds = suite.rounds[suite.rounds["label"] == label]
    clients = suite.clients[suite.clients["label"] == label]
    trained = clients[clients["status"] == "trained"] if "status" in clients else clients.iloc[0:0]
    seeds = [g for _, g in rounds.groupby("seed")]
    accurate = [g.dropna(subset=["accuracy"]).sort_values("round") for g in seeds]
    ended = [g["accuracy"] for g in accurate if len(g)]
    final = interval([last_rounds(a).mean() for a in ended], 0.0, 1.0)  # the headline: each seed's last tenth
    last = interval([a.iloc[-1] for a in ended], 0.0, 1.0)
    best = interval([a.max() for a in ended], 0.0, 1.0)
    change = mean_ci(plateau_change(a) for a in ended)[0]
    ttt_seeds = {int(g["seed"].iloc[0]): time_to_target(g, target) for g in seeds}
    ttt = interval(ttt_seeds.values(), 0.0)
    timed = bool(seeds) and rounds["device_wall_time"].notna().any()
    peak = trained[TENSOR + "peak"].max()
    share = (rounds["participated"] / rounds["devices"].where(rounds["devices"] > 0)).mean()
    recorded = sorted({len(g) for g in seeds})
    if seeds and not any(len(g) for g in accurate):
        notes.append(f"{label}: no accuracy recorded yet")
    if seeds and math.isnan(peak):
        notes.append(f"{label}: no client trained, so no measured memory")
    if 0 < ttt[3] < len(seeds):
        notes.append(f"{label}: reached {target:.0%} in {ttt[3]} of {len(seeds)} seeds; time is their mean")
    if len(set(recorded)) > 1:
        notes.append(f"{label}: seeds recorded {recorded[0]} to {recorded[-1]} rounds; "
                     "final accuracy mixes them")
    if seeds and not timed:
        notes.append(f"{label}: no device time in its records (made before the device time model); "
                     "time to target n/a")
    failed = int((clients["status"] == "failed").sum()) if "status" in clients else 0
    if failed:
        notes.append(f"{label}: {failed} selected client(s) lost with their worker (status 'failed'); "
                     "their rounds aggregated the others")
    below = int((trained[TENSOR + "peak"] < trained[ESTIMATE]).sum()) if ESTIMATE in trained else 0
    if below:
        notes.append(f"{label}: {below} of {len(trained)} trained clients measured less than their task's estimate "
                     "(the estimate is the largest step the task can take, e.g. FjORD's widest drawn width): its "
                     "task peaks are upper bounds")
    if abs(change) > PLATEAU:
        notes.append(f"{label}: not at a plateau: its accuracy moved {100 * change:+.1f} points between the last two "
                     f"tenths of its evaluated rounds (mean over seeds; a plateau moves at most {100 * PLATEAU:.1f}), "
                     + ("so it is still rising and its accuracy understates where it ends" if change > 0
                        else "so it is falling or unsteady"))
    compute, comm = (trained[c].mean() if c in trained else math.nan for c in ("compute_time", "comm_time"))
    stuck = _stuck_at_chance(suite, label, accurate, trained)
    if stuck:
        notes.append(stuck)
    over = _over_budget(trained)
    if over > 0:
        notes.append(f"{label}: {over:.0%} of its trained clients exceeded their memory budget; its accuracy "
                     "and time are not reachable on this fleet")
    return {
        "label": label,
        "method": suite.runs.loc[suite.runs["label"] == label, "method"].iloc[0],
        "seeds": len(seeds),
        "rounds": _span(recorded),
        "final": final[0], "final_lo": final[1], "final_hi": final[2],
        "last": last[0], "last_lo": last[1], "last_hi": last[2], "change": change,
        "best": best[0], "best_lo": best[1], "best_hi": best[2],
        "peak_mb": peak / MB, "task_min_mb": clients[ESTIMATE].min() / MB, "task_max_mb": clients[ESTIMATE].max() / MB,
        "over_budget": over, "fits": _fits(clients), "participation": share,
        # a trained client's simulated round: compute and communication seconds, and communication's share
        "compute_s": compute, "comm_s": comm, "comm_share": comm / (compute + comm) if compute + comm > 0 else math.nan,
        "ttt": ttt[0], "ttt_lo": ttt[1], "ttt_hi": ttt[2], "reached": ttt[3] if timed else math.nan,
        "ttt_seeds": ttt_seeds,
        "dropped": _dropped(clients),
        "host_time": mean_ci([g["wall_time"].max() for g in seeds])[0],
        "up_mb": mean_ci([g["bytes_up"].sum() / MB for g in seeds])[0],
        "down_mb": mean_ci([g["bytes_down"].sum() / MB for g in seeds])[0],
    }


def suite_summary(suite_dir: str | Path, target: float | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The report's summary of the suite folder as numbers, one row per label (the columns of
    ``summarize``: ``final``/``final_lo``/``final_hi`` the headline and its interval over seeds,
    ``change``, ``versus_best``, ``peak_mb``, ``ttt``, ...), and its notes; ``target`` defaults to the
    suite's ``report.target``."""
    suite = load_suite(suite_dir)
    return summarize(suite, suite.targets[0] if target is None else target)


def summarize(suite: Suite, target: float) -> tuple[pd.DataFrame, list[str]]:
    """One row of numbers per label (index), and notes on what the numbers lack."""
    notes: list[str] = []
    rows = [_label_row(suite, label, target, notes) for label in suite.labels]
    summary = pd.DataFrame(rows).set_index("label")
    summary["reference"] = pd.Series(references(suite))
    # a speed-up pairs seeds: the reference's time over the method's, seed by seed, only where every
    # seed of both reached the target; its interval is over those per-seed ratios
    whole = summary["reached"] == summary["seeds"]
    speedups = pd.DataFrame([_speedup(summary, label, ref, whole) for label, ref in summary["reference"].items()],
                            index=summary.index, columns=["speedup", "speedup_lo", "speedup_hi"])
    summary = summary.drop(columns="ttt_seeds").join(speedups)
    summary["moving"] = summary["change"].abs() > PLATEAU  # not at its plateau; False where change is nan
    summary["versus_best"] = _versus_best(summary)
    timed = summary["reached"].notna() & (summary["seeds"] > 0)  # labels whose records carry device time
    none_reached = bool(timed.any()) and bool((summary.loc[timed, "reached"] == 0).all())
    if none_reached:
        notes.append(f"no method reached {target:.0%}: time to target n/a (a lower --target shows how fast each "
                     "gets there)")
    for reference, group in summary.groupby(summary["reference"].fillna(""), sort=True):
        if not reference:
            where = f" in suite {suite.suites[group.index[0]]}" if suite.compared is not None else ""
            notes.append(f"no FedAvg run (label or method 'fedavg'){where}: speed-up n/a")
        elif not whole[reference] and not none_reached:
            notes.append(f"{reference} has not reached {target:.0%} in every seed: speed-up n/a")
    return summary, notes


def _speedup(summary: pd.DataFrame, label: str, ref: Any, whole: pd.Series) -> tuple[float, float, float]:
    """The reference's device time to target over the label's, paired by seed: mean and interval."""
    if not isinstance(ref, str) or not whole[label] or not whole[ref]:
        return math.nan, math.nan, math.nan
    if label == ref:
        return 1.0, math.nan, math.nan
    mine, theirs = summary.loc[label, "ttt_seeds"], summary.loc[ref, "ttt_seeds"]
    mean, lo, hi, _ = interval(theirs[s] / mine[s] for s in sorted(mine.keys() & theirs.keys()))
    return mean, lo, hi


BEST, NOT_SEPARABLE, BELOW, ABOVE, NO_INTERVAL = "best", "not separable", "below", "above", "n/a"
MOVING = " (moving)"  # the label or the best is not at its plateau: more rounds may change the verdict


def _versus_best(summary: pd.DataFrame) -> list[str]:
    """Each label against the best accuracy among the labels within their budgets: whether their
    intervals overlap (then the two cannot be told apart on these seeds); marked ``MOVING`` where
    either is not at its plateau, since the verdict is then about a round, not about the methods."""
    feasible = summary[(summary["over_budget"].fillna(0) == 0) & summary["final"].notna()]
    if feasible.empty:
        return [NO_INTERVAL] * len(summary)
    best = feasible["final"].idxmax()
    top = (summary.loc[best, "final_lo"], summary.loc[best, "final_hi"])
    best_moving = summary.loc[best, "moving"]
    out = []
    for label, row in summary.iterrows():
        if label == best:
            verdict = BEST
        elif math.isnan(row["final"]) or math.isnan(row["final_lo"]) or math.isnan(top[0]):
            out.append(NO_INTERVAL)
            continue
        elif overlaps((row["final_lo"], row["final_hi"]), top):
            verdict = NOT_SEPARABLE
        else:
            verdict = ABOVE if row["final"] > summary.loc[best, "final"] else BELOW
        out.append(verdict + (MOVING if row["moving"] or best_moving else ""))
    return out


def over_budget_names(summary: pd.DataFrame) -> dict[str, str]:
    """Each label as shown wherever its accuracy or time is: marked when it ran over budget."""
    return {label: f"{label} (over budget)" if row["over_budget"] > 0 else label
            for label, row in summary.iterrows()}


def _interval(mean: float, lo: float, hi: float, scale: float = 1.0, digits: int = 1) -> str:
    if math.isnan(mean):
        return DASH
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(lo) else f"{text} ({lo * scale:.{digits}f}{DASH}{hi * scale:.{digits}f})"


def _percent(summary: pd.DataFrame, column: str) -> list[str]:
    return [_interval(m, lo, hi, 100) for m, lo, hi in
            zip(summary[column], summary[column + "_lo"], summary[column + "_hi"], strict=True)]


def _time(row: pd.Series) -> str:
    if row["seeds"] == 0:
        return DASH
    if math.isnan(row["reached"]):
        return "n/a"
    if row["reached"] == 0:
        return "not reached"
    reached, kind = int(row["reached"]), interval_kind(int(row["reached"]))
    partial = ""
    if reached < row["seeds"]:
        partial = f" ({reached}/{row['seeds']} seeds" + ("" if kind == "none" else f", {INTERVAL_NAMES[kind]}") + ")"
    return _interval(row["ttt"], row["ttt_lo"], row["ttt_hi"]) + partial


def _seeds(n: int) -> str:
    kind = interval_kind(n)
    return str(n) if kind == "none" else f"{n} ({INTERVAL_NAMES[kind]})"


def speedup_header(summary: pd.DataFrame) -> str:
    """"Speed-up vs fedavg", or, when suites with a FedAvg each are compared, against each one's."""
    names = over_budget_names(summary)
    refs = summary["reference"].dropna().unique()
    if len(refs) > 1:
        return "Speed-up vs its suite's FedAvg"
    return f"Speed-up vs {names[refs[0]]}" if len(refs) else "Speed-up vs FedAvg"


def display(summary: pd.DataFrame, target: float) -> pd.DataFrame:
    """The summary as the strings a reader sees: %, MB, s, mean (interval), n/a."""
    def number(value: float, digits: int = 2) -> str:
        return DASH if math.isnan(value) else f"{value:.{digits}f}"

    names = over_budget_names(summary)
    return pd.DataFrame({
        "Label": [names[label] for label in summary.index],
        "Method": summary["method"],
        "Seeds": summary["seeds"].map(_seeds),
        "Rounds": summary["rounds"],
        "Accuracy, last 10% of rounds (%)": _percent(summary, "final"),
        "Against the best": summary["versus_best"],
        "Last round (%)": _percent(summary, "last"),
        "Change over the last 20% (points)": summary["change"].map(
            lambda v: DASH if math.isnan(v) else f"{100 * v:+.1f}"),
        "Best accuracy (%)": _percent(summary, "best"),
        "Smallest task (MB)": summary["task_min_mb"].map(number),
        "Largest task (MB)": summary["task_max_mb"].map(number),
        "Peak measured (MB)": summary["peak_mb"].map(number),
        "Fleet that fits (%)": (summary["fits"] * 100).map(lambda v: number(v, 1)),
        "Over budget (% of trained)": (summary["over_budget"] * 100).map(lambda v: number(v, 1)),
        "Participation (%)": (summary["participation"] * 100).map(lambda v: number(v, 1)),
        "Dropped at deadline (% of selected)": (summary["dropped"] * 100).map(lambda v: number(v, 1)),
        f"Device time to {target:.0%} (s)": [_time(row) for _, row in summary.iterrows()],
        speedup_header(summary): [speedup_text(row["speedup"], row["speedup_lo"], row["speedup_hi"])
                                  for _, row in summary.iterrows()],
        "Communication (% of device time)": (summary["comm_share"] * 100).map(lambda v: number(v, 0)),
        "Host time (s)": summary["host_time"].map(lambda v: number(v, 1)),
        "Bytes up (MB)": summary["up_mb"].map(number),
        "Bytes down (MB)": summary["down_mb"].map(number),
    }).reset_index(drop=True)


def flatten_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A config as (dotted key, value) pairs, methods apart, as ``--set`` writes them."""
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += flatten_config(value, f"{prefix}{key}.")
        elif key != "methods":
            plain = isinstance(value, str | int | float) and not isinstance(value, bool)
            rows.append((f"{prefix}{key}", str(value) if plain else json.dumps(value)))
    return rows


def config_table(suite: Suite) -> pd.DataFrame:
    """The suite config (methods apart), flattened to dotted keys as in ``--set``."""
    return pd.DataFrame(flatten_config(suite.config), columns=["Key", "Value"])


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


def _provenance(name: str, path: str, info: dict[str, Any], manifests: list[dict[str, Any]]) -> list[tuple]:
    manifest = next((m for m in manifests if m), {})
    source = info or manifest
    codes = [c for m in manifests for c in (*m.get("code_history", []), m.get("code")) if isinstance(c, dict)]
    commits = [*(info.get("git_commits") or [source.get("git_commit")]), *(c.get("commit") for c in codes)]
    sources = list(dict.fromkeys(c.get("source") for c in codes if c.get("source")))
    rows = [("suite", name), ("records", path), ("started", source.get("started")),
            ("git commit", ", ".join(dict.fromkeys(c for c in commits if c)) or None)]
    if len(sources) > 1:  # a run continued by other code (--allow-code-change), or runs by several
        rows.append(("source versions", f"{len(sources)} ({', '.join(sources)}): the records mix code versions"))
    rows += [(key, version) for key, version in (source.get("versions") or {}).items()]
    devices = sorted({m.get("device") for m in manifests if m.get("device")})
    rows.append(("device", ", ".join(devices) or None))
    data, model = manifest.get("data") or {}, manifest.get("model") or {}
    if data:
        rows.append(("data", f"{data.get('name')}: {data.get('train')} train, {data.get('test')} test, "
                             f"{data.get('num_classes')} classes, input {data.get('input_shape')}"))
    if model:
        rows.append(("model", f"{model.get('name')} (width {model.get('width')}, "
                              f"{model.get('parameters')} parameters)"))
    return rows


def provenance_table(suite: Suite) -> pd.DataFrame:
    """Where the numbers come from: versions, commit, start time, device, data and model (per
    suite when several are compared)."""
    names = sorted(set(suite.suites.values()))
    rows = []
    for name in names:
        manifests = [m for (label, _), m in suite.manifests.items() if suite.suites.get(label) == name]
        info = suite.info if len(names) == 1 else {}
        part = _provenance(name, str(suite.path) if len(names) == 1 else name, info, manifests)
        rows += part if len(names) == 1 else [(f"{name}: {k}", v) for k, v in part[2:]]
    return pd.DataFrame([(k, DASH if v is None else str(v)) for k, v in rows], columns=["Key", "Value"])


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency); pipes in cells are escaped."""
    def cells(values: Any) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(frame.columns), "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + [cells(row) for row in frame.itertuples(index=False)])
