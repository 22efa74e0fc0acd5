"""reports/: figures and tables rendered from records only.

A synthetic suite is written from closed-form values (``accuracy``, ``need``, ``round_time``
below), so every plotted number and table cell can be checked against a value computed here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.text import Text

from reports import figures, stages
from reports.cli import main
from reports.compare import load_suites
from reports.load import CATEGORIES, ReportError, load_suite, records
from reports.page import FIGURES
from reports.render import render
from reports.stats import interval, last_rounds, mean_ci, pareto_front, plateau_change
from reports.style import METHOD_COLORS, method_styles
from reports.tables import display, over_budget_names, summarize

MB = 2**20
ROOT = Path(__file__).resolve().parents[1]
BUDGETS = [2 * MB, 4 * MB, 6 * MB, 8 * MB]
PER_ROUND = 3  # clients_per_round
# label: (method, base accuracy, seconds per round)
METHODS = {
    "fedavg": ("fedavg", 0.35, 2.0),
    "heterofl": ("heterofl", 0.25, 1.0),
    "neulite": ("neulite", 0.30, 1.5),
    "toolarge": ("exclusivefl", 0.10, 0.5),  # no device can train it
}
FAMILIES = {"fedavg": "full model", "exclusivefl": "full model", "heterofl": "width scaling", "neulite": "progressive"}
SHARES = {"parameters": 0.25, "buffers": 0.05, "gradients": 0.25, "optimizer": 0.2, "state": 0.05, "activations": 0.15}
TARGET = 0.73  # reached by fedavg at round 4, by heterofl and neulite at round 5 (no ties)
T_1 = 12.706204736174698  # Student's t, 97.5% quantile, 1 degree of freedom
T_2 = 4.302652729911275  # and 2 degrees of freedom


def stage_of(r: int) -> int:
    return (r + 1) // 2  # rounds 1-2: stage 1, 3-4: stage 2, 5: stage 3


def accuracy(label: str, seed: int, r: int) -> float:
    base = METHODS[label][1]
    return base if label == "toolarge" else round(base + 0.1 * r + 0.02 * seed, 6)


def round_time(label: str, seed: int) -> float:
    return METHODS[label][2] * (1 + 0.1 * seed)


def wall_time(label: str, seed: int, r: int) -> float:
    return sum(round_time(label, seed) for _ in range(r))


def device_round(label: str, seed: int) -> float:
    """Simulated seconds of a round on the devices (three times the host's, to tell them apart)."""
    return 3 * round_time(label, seed)


COMPUTE_SHARE = {"fedavg": 0.2, "heterofl": 0.4, "neulite": 0.5, "toolarge": 0.5}  # of a client's device time


def device_time(label: str, seed: int, r: int) -> float:
    return r * device_round(label, seed)


def time_to_target_of(label: str, seed: int) -> float:
    """Device time at the first round whose accuracy reaches TARGET."""
    return device_time(label, seed, next(r for r in range(1, 6) if accuracy(label, seed, r) >= TARGET))


def need(label: str, seed: int, r: int, device: int) -> int:
    """The task's peak in bytes (estimated = measured)."""
    base = {"fedavg": 5 * MB, "heterofl": BUDGETS[device] * 3 // 4, "neulite": stage_of(r) * MB + MB // 2,
            "toolarge": 100 * MB}[label]
    return base + device * 4096 + seed * 1024


def split(peak: int) -> dict[str, int]:
    parts = {c: int(peak * share) for c, share in SHARES.items()}
    return {"peak": peak, **parts, "other": peak - sum(parts.values())}


def fits(label: str, seed: int, r: int) -> list[int]:
    return [d for d, b in enumerate(BUDGETS) if need(label, seed, r, d) <= b]


def trained_devices(label: str, seed: int, r: int) -> list[int]:
    """FedAvg ignores budgets (as the harness's does): its first devices train, over budget or not."""
    pool = range(len(BUDGETS)) if label == "fedavg" else fits(label, seed, r)
    return list(pool)[:PER_ROUND]


def write_run(folder: Path, label: str, seed: int, rounds: int, config: dict, null_rounds: int = 0) -> None:
    method = METHODS[label][0]
    folder.mkdir(parents=True)
    run = {"label": label, "method": method, "seed": seed}
    manifest = {
        "suite": config["name"], **run, "family": FAMILIES[method], "method_params": {"lr_scale": 1.0},
        "config": config,
        "versions": {"python": "3.11", "torch": "2.x"}, "git_commit": None, "started": "2025-01-01T00:00:00",
        "device": "cpu", "data": {"name": "synthetic", "train": 100, "test": 20, "num_classes": 10,
                                  "input_shape": [1, 8, 8]},
        "model": {"name": "cnn", "width": 1.0, "parameters": 1234},
        "fleet": [{"id": d, "budget": b, "flops": 1e10, "up": 1.25e6, "down": 6.25e6} for d, b in enumerate(BUDGETS)],
        "partition": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with open(folder / "rounds.jsonl", "w") as rounds_file, \
            open(folder / "clients.jsonl", "w") as clients_file:
        for r in range(1, rounds + 1):
            eligible = list(range(len(BUDGETS))) if label == "fedavg" else fits(label, seed, r)
            trained = trained_devices(label, seed, r)
            stage = {"stage": stage_of(r)} if method == "neulite" else {}
            for d, budget in enumerate(BUDGETS):
                status = "trained" if d in trained else "not_selected" if d in eligible else "excluded"
                row = {"round": r, **run, "device": d, "budget": budget, "status": status,
                       "reason": "over budget" if status == "excluded" else "", "task": "full",
                       **stage,  # an excluded device was offered the round's stage too
                       "estimate": split(need(label, seed, r, d))}
                if status == "trained":
                    row |= {"memory": {"tensor": split(need(label, seed, r, d)),
                                       "rss": {"peak": 9 * MB, "start": 8 * MB, "delta": MB}},
                            "over_budget": need(label, seed, r, d) > budget, "samples": 10, "steps": 1,
                            "train_loss": 1.0, "device_time": device_round(label, seed),
                            "compute_time": COMPUTE_SHARE[label] * device_round(label, seed),
                            "comm_time": (1 - COMPUTE_SHARE[label]) * device_round(label, seed),
                            "train_time": 0.1, "bytes_up": (d + 1) * MB // 4, "bytes_down": (d + 1) * MB // 2}
                clients_file.write(json.dumps(row) + "\n")
            acc = None if r <= null_rounds else accuracy(label, seed, r)
            evals = {"full": {"accuracy": acc, "loss": 1.0}}
            if method == "neulite":
                evals["stage"] = {"accuracy": accuracy(label, seed, r) + 0.05, "loss": 1.0}
            peaks = [need(label, seed, r, d) for d in trained]
            rounds_file.write(json.dumps({
                "round": r, **run, "accuracy": acc, "loss": 1.0, "evals": evals, "devices": len(BUDGETS),
                "eligible": len(eligible), "selected": len(trained), "participated": len(trained),
                "excluded": len(BUDGETS) - len(eligible), "peak_tensor": max(peaks, default=None),
                "peak_estimate": max(peaks, default=None), "train_time": 0.1 * len(trained),
                "round_time": round_time(label, seed), "wall_time": wall_time(label, seed, r),
                "device_time": device_round(label, seed), "device_wall_time": device_time(label, seed, r),
                "bytes_up": sum((d + 1) * MB // 4 for d in trained),
                "bytes_down": sum((d + 1) * MB // 2 for d in trained), **stage,
            }) + "\n")


def write_suite(root: Path, labels=("fedavg", "heterofl", "neulite"), seeds=(0, 1), rounds: int = 5,
                null_rounds: int = 0) -> Path:
    """A suite folder as the harness writes it (docs/records.md)."""
    suite = root / "synthetic"
    config = {"name": "synthetic", "rounds": rounds, "clients_per_round": PER_ROUND, "seeds": list(seeds),
              "data": {"name": "synthetic"}, "model": {"name": "cnn", "width": 1.0},
              "fleet": {"devices": len(BUDGETS), "distribution": "trace"},
              "methods": [{"method": METHODS[label][0], "label": label, "params": {}} for label in labels]}
    runs = [{"label": label, "method": METHODS[label][0], "seed": seed, "dir": f"{label}-seed{seed}"}
            for label in labels for seed in seeds]
    for run in runs:
        write_run(suite / run["dir"], run["label"], run["seed"], rounds, config, null_rounds)
    (suite / "suite.json").write_text(json.dumps({
        "suite": "synthetic", "config": config, "runs": runs, "git_commit": "abc123",
        "versions": {"python": "3.11", "torch": "2.x", "torchvision": "0.x", "harness": "0.1.0"},
        "started": "2025-01-01T00:00:00",
    }))
    return suite


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The summary table of summary.md, by label."""
    lines = [line for line in markdown.split("## Notes")[0].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]
    return {row["Label"]: row for row in rows}


def mean_over_seeds(values) -> float:
    return float(np.mean(list(values)))


@pytest.fixture(autouse=True)
def close_figures():
    """Tests read figures' artists and drop them; pyplot keeps each open until it is closed."""
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def suite(suite_dir):
    return load_suite(suite_dir)


def named(suite) -> dict:
    """The report's styles: each label's colour and marker, and its name (marked over budget)."""
    styles = method_styles(suite.methods)
    summary, _ = summarize(suite, TARGET)
    for label, name in over_budget_names(summary).items():
        styles[label].update(name=name, over_budget=name != label)
    return styles


@pytest.fixture(scope="module")
def styles(suite):
    return named(suite)


# ---- statistics ------------------------------------------------------------------------------

def test_mean_ci_uses_student_t():
    mean, half, n = mean_ci([1.0, 3.0])
    assert (mean, n) == (2.0, 2)
    assert half == pytest.approx(T_1 * math.sqrt(2) / math.sqrt(2))
    assert mean_ci([0.5, None, math.nan]) == (0.5, pytest.approx(math.nan, nan_ok=True), 1)
    assert mean_ci([])[2] == 0


def test_intervals_are_t_with_three_seeds_the_range_with_two_and_clipped():
    assert interval([0.2, 0.6]) == (pytest.approx(0.4), 0.2, 0.6, 2)  # never a t-band from two seeds
    mean, lo, hi, n = interval([0.9, 0.95, 1.0], 0.0, 1.0)
    half = T_2 * 0.05 / math.sqrt(3)
    assert (mean, lo, hi, n) == (pytest.approx(0.95), pytest.approx(0.95 - half), 1.0, 3)  # clipped at 1
    assert math.isnan(interval([0.5])[1])


def test_a_runs_ending_is_its_last_tenth_and_its_change_the_tenth_before():
    values = pd.Series([0.1 * i for i in range(1, 21)])  # 20 evaluated rounds: tenths of 2
    assert last_rounds(values).tolist() == pytest.approx([1.9, 2.0])
    assert plateau_change(values) == pytest.approx(0.2)  # (1.9 + 2.0) / 2 - (1.7 + 1.8) / 2
    assert last_rounds(values[:3]).tolist() == pytest.approx([0.3]) and plateau_change(values[:3]) == pytest.approx(0.1)
    assert math.isnan(plateau_change(values[:1]))


def settled(rounds: pd.DataFrame) -> pd.DataFrame:
    """``rounds`` with every run's round 4 set to its round 5: each run at its plateau (change 0)."""
    rounds = rounds.copy()
    fifth = rounds[rounds["round"] == 5].set_index(["label", "seed"])["accuracy"]
    fourth = rounds["round"] == 4
    keys = zip(rounds.loc[fourth, "label"], rounds.loc[fourth, "seed"])
    rounds.loc[fourth, "accuracy"] = [fifth[key] for key in keys]
    return rounds


def test_methods_whose_interval_overlaps_the_best_ones_are_not_separable(suite):
    rounds = settled(suite.rounds)
    close = (rounds["label"] == "heterofl") & rounds["round"].isin([4, 5])
    rounds.loc[close, "accuracy"] = rounds.loc[close, "seed"].map({0: 0.79, 1: 0.815})  # 79.0-81.5 meets 80-82
    summary, _ = summarize(dataclasses.replace(suite, rounds=rounds), TARGET)
    assert summary["versus_best"].to_dict() == {"fedavg": "above", "heterofl": "not separable", "neulite": "best"}
    one_seed = dataclasses.replace(suite, rounds=rounds[rounds["seed"] == 0])
    assert summarize(one_seed, TARGET)[0]["versus_best"].to_dict() == {"fedavg": "n/a", "heterofl": "n/a",
                                                                        "neulite": "best"}


def test_a_verdict_against_the_best_is_marked_moving_where_either_is_not_at_its_plateau(suite):
    rounds = settled(suite.rounds)
    fourth = (rounds["label"] == "heterofl") & (rounds["round"] == 4)
    rounds.loc[fourth, "accuracy"] -= 0.02  # heterofl rose 2 points into its last round: moving
    summary, _ = summarize(dataclasses.replace(suite, rounds=rounds), TARGET)
    assert summary["moving"].to_dict() == {"fedavg": False, "heterofl": True, "neulite": False}
    assert summary["versus_best"].to_dict() == {"fedavg": "above", "heterofl": "below (moving)", "neulite": "best"}
    best = (rounds["label"] == "neulite") & (rounds["round"] == 4)
    rounds.loc[best, "accuracy"] += 0.02  # the best fell 2 points: every verdict against it may change
    summary, _ = summarize(dataclasses.replace(suite, rounds=rounds), TARGET)
    assert summary["versus_best"].to_dict() == {"fedavg": "above (moving)", "heterofl": "below (moving)",
                                                "neulite": "best (moving)"}


def test_pareto_front_keeps_undominated_points():
    memory = [1.0, 2.0, 3.0, 2.5, math.nan]
    accuracy = [0.5, 0.7, 0.9, 0.6, 0.99]
    assert pareto_front(memory, accuracy).tolist() == [True, True, True, False, False]


# ---- rendering -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(suite_dir, tmp_path_factory):
    """The synthetic suite's report, rendered once for the tests that read it."""
    out = tmp_path_factory.mktemp("report")
    return render(suite_dir, out, target=TARGET), out


def test_render_writes_every_file_and_only_the_notes_its_records_call_for(rendered):
    """Every synthetic run gains 10 points a round (round 5 against round 4: still rising), and FedAvg
    ran over its clients' budgets; nothing else is noted."""
    report, out = rendered
    rising = ("not at a plateau: its accuracy moved +10.0 points between the last two tenths of its evaluated "
              "rounds (mean over seeds; a plateau moves at most 1.5), so it is still rising and its accuracy "
              "understates where it ends")
    assert report.notes == [f"fedavg: {rising}",
                            "fedavg: 67% of its trained clients exceeded their memory budget; its accuracy "
                            "and time are not reachable on this fleet",
                            f"heterofl: {rising}", f"neulite: {rising}"]
    for stem in FIGURES:
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, stem
    html = (out / "index.html").read_text()
    assert all(f'src="{stem}.png"' in html for stem in FIGURES)
    assert "<table" in html and "fedavg (over budget)" in html
    markdown = (out / "summary.md").read_text()
    assert all(f"({stem}.png)" in markdown for stem in FIGURES)
    assert "| data.name | synthetic |" in markdown and "abc123" in markdown


def test_accuracy_lines_are_the_mean_over_seeds_with_their_range(suite, styles):
    for build, x_of in ((figures.accuracy_vs_round, lambda label, r: r),
                        (figures.accuracy_vs_time,  # simulated device time, not the host's
                         lambda label, r: mean_over_seeds(device_time(label, s, r) for s in (0, 1)))):
        ax = build(suite.rounds, styles).axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == ["fedavg (over budget)", "heterofl", "neulite"]
        for label in ("fedavg", "heterofl", "neulite"):
            line = lines[styles[label]["name"]]
            assert line.get_xdata() == pytest.approx([x_of(label, r) for r in range(1, 6)])
            assert line.get_ydata() == pytest.approx(
                [mean_over_seeds(accuracy(label, s, r) for s in (0, 1)) for r in range(1, 6)])
            assert line.get_color() == styles[label]["color"]
        assert len(ax.collections) == 3  # one band per label: the two seeds' range, no t-band
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        assert band.max() == pytest.approx(accuracy("fedavg", 1, 5)) and band.min() == pytest.approx(
            accuracy("fedavg", 0, 1))
        assert "min–max range (2 seeds)" in ax.get_legend().get_title().get_text()


def panels(fig) -> dict[str, dict[str, list]]:
    """Each shown panel's title -> its own lines (legend name -> (x, y)) and its grey context lines."""
    return {ax.get_title(): {"own": {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                                     for line in ax.get_lines() if not (line.get_gid() or "").startswith("context")},
                             "context": sorted(line.get_gid() for line in ax.get_lines()
                                               if (line.get_gid() or "").startswith("context"))}
            for ax in fig.axes if ax.get_visible()}


def test_accuracy_by_family_draws_one_panel_per_kind_of_method(suite, styles):
    """Small multiples: a panel per family the manifests record, its own methods' mean lines in colour
    (the values of the single figure), the others grey behind; one family: no figure."""
    drawn = panels(figures.accuracy_by_family(suite.rounds, styles, suite.families))
    assert sorted(drawn) == ["full model", "progressive", "width scaling"]
    for family, label in (("full model", "fedavg"), ("progressive", "neulite"), ("width scaling", "heterofl")):
        assert list(drawn[family]["own"]) == [styles[label]["name"]]
        x, y = drawn[family]["own"][styles[label]["name"]]
        assert x == [1, 2, 3, 4, 5]
        assert y == pytest.approx([mean_over_seeds(accuracy(label, s, r) for s in (0, 1)) for r in range(1, 6)])
        assert drawn[family]["context"] == sorted(f"context {other}" for other in ("fedavg", "heterofl", "neulite")
                                                  if other != label)
    one_family = {label: "full model" for label in suite.families}
    assert figures.accuracy_by_family(suite.rounds, styles, one_family) is None


def test_the_family_is_each_runs_manifests_and_other_without_one(tmp_path):
    folder = write_suite(tmp_path, labels=("fedavg", "neulite"), seeds=(0,))
    assert load_suite(folder).families == {"fedavg": "full model", "neulite": "progressive"}
    manifest = folder / "neulite-seed0" / "manifest.json"  # records from before methods named a family
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "family"}))
    assert load_suite(folder).families == {"fedavg": "full model", "neulite": "other"}


def test_every_built_in_method_names_its_family():
    from harness.methods import METHODS as REGISTERED
    built_in = [name for name in REGISTERED if REGISTERED[name].__module__.split(".")[0] in ("baselines", "neulite")]
    families = {name: REGISTERED[name].family for name in built_in}
    assert len(families) >= 11 and "other" not in families.values()
    assert families["neulite"] == "progressive" and families["depthfl"] == "depth scaling"
    assert families["heterofl"] == families["fjord"] == families["fedrolex"] == "width scaling"
    assert families["fedavg"] == families["exclusive"] == families["allsmall"] == "full model"


def test_three_seeds_get_a_t_band_clipped_to_one(tmp_path):
    suite = load_suite(write_suite(tmp_path, labels=("heterofl",), seeds=(0, 1, 2)))
    ax = figures.accuracy_vs_round(suite.rounds, named(suite)).axes[0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    values = [accuracy("heterofl", s, 5) for s in (0, 1, 2)]  # 0.75, 0.77, 0.79
    half = T_2 * float(np.std(values, ddof=1)) / math.sqrt(3)
    assert band.max() == pytest.approx(min(np.mean(values) + half, 1.0))
    assert "95% t-interval" in ax.get_legend().get_title().get_text()


def test_memory_by_method_shows_peaks_task_ranges_and_who_fits(suite, styles):
    fig = figures.memory_by_method(suite.clients, suite.fleet, styles)
    ax, bx = fig.axes
    heights = {c.get_label(): [p.get_height() for p in c] for c in ax.containers}
    assert list(heights) == list(CATEGORIES)
    for i, label in enumerate(["fedavg", "heterofl", "neulite"]):
        top = max(need(label, s, r, d)
                  for s in (0, 1) for r in range(1, 6) for d in trained_devices(label, s, r))
        for category in CATEGORIES:
            assert heights[category][i] == pytest.approx(split(top)[category] / MB)
        dots = next(c for c in ax.collections if c.get_gid() == label).get_offsets()[:, 1]
        rounds_of = {(s, d): [r for r in range(1, 6) if d in trained_devices(label, s, r)]
                     for s in (0, 1) for d in range(4)}
        expected = [max(need(label, s, r, d) for r in rs) / MB for (s, d), rs in rounds_of.items() if rs]
        assert sorted(dots) == pytest.approx(sorted(expected))
        needs = [need(label, s, r, d) / MB for s in (0, 1) for r in range(1, 6) for d in range(4)]
        tasks = next(c for c in ax.collections if c.get_gid() == f"tasks {label}").get_segments()[0][:, 1]
        assert sorted(tasks) == pytest.approx([min(needs), max(needs)])  # smallest and largest task
        level = next(line for line in bx.get_lines() if line.get_gid() == f"fits {label}").get_xydata()[0]
        assert level == pytest.approx([np.mean([b / MB >= min(needs) for b in BUDGETS]), min(needs)])
    hatched = [p.get_hatch() for p in ax.containers[0]]
    assert hatched == ["//", "", ""]  # fedavg ran over budget
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fedavg (over budget)", "heterofl", "neulite"]
    fleet = next(line for line in bx.get_lines() if line.get_gid() == "fleet")
    for share, level in fleet.get_xydata():  # share of devices whose budget is at least the level
        assert share == pytest.approx(np.mean([b / MB >= level for b in BUDGETS]))


def test_reports_read_the_memory_categories_the_tracker_writes():
    """reports/ imports no training code, so it keeps its own copy of the category names."""
    from harness.memory import CATEGORIES as WRITTEN

    assert CATEGORIES == WRITTEN


def test_participation_is_the_share_of_the_fleet(suite, styles):
    fits_ax, took_part_ax = figures.participation(suite.rounds, suite.clients, styles).axes
    for ax, count in ((fits_ax, lambda lb, seed, r: len(fits(lb, seed, r))),
                      (took_part_ax, lambda lb, seed, r: len(trained_devices(lb, seed, r)))):
        for label in ("fedavg", "heterofl", "neulite"):
            line = next(line for line in ax.get_lines() if line.get_label() == styles[label]["name"])
            counts = [(count(label, 0, r) + count(label, 1, r)) / 2 for r in range(1, 6)]
            assert line.get_ydata() == pytest.approx([c / 4 for c in counts])
    fedavg = styles["fedavg"]["name"]  # trains three devices a round, but the task fits only two
    assert next(line for line in fits_ax.get_lines() if line.get_label() == fedavg).get_ydata() == pytest.approx(
        [0.5] * 5)
    assert next(line for line in took_part_ax.get_lines() if line.get_label() == fedavg).get_ydata() == pytest.approx(
        [0.75] * 5)
    shared = [t.get_text() for t in took_part_ax.texts if t.get_gid() == "shared end"]
    # all end at 75%: lines hide each other, so named, in lines that keep the names inside the panel
    assert shared == ["fedavg (over budget), heterofl,\nneulite"]


def test_participation_is_the_mean_over_seeds_round_by_round():
    """Two seeds whose fleets fit and train differently: each line is their mean, round by round."""
    rounds = pd.DataFrame({"label": "fedavg", "seed": [0, 0, 1, 1], "round": [1, 2, 1, 2], "devices": 4,
                           "participated": [1, 2, 3, 4]})
    fitting = {(0, 1): 1, (0, 2): 2, (1, 1): 4, (1, 2): 3}  # (seed, round): devices whose budget covers the task
    clients = pd.DataFrame([{"label": "fedavg", "seed": seed, "round": r, "budget": 10 * MB,
                             "estimate.peak": (MB if d < n else 20 * MB)}
                            for (seed, r), n in fitting.items() for d in range(4)])
    styles = {"fedavg": {**method_styles({"fedavg": "fedavg"})["fedavg"], "name": "fedavg"}}
    fits_ax, took_part_ax = figures.participation(rounds, clients, styles).axes
    assert fits_ax.get_lines()[0].get_ydata() == pytest.approx([(1 + 4) / 8, (2 + 3) / 8])
    assert took_part_ax.get_lines()[0].get_ydata() == pytest.approx([(1 + 3) / 8, (2 + 4) / 8])


def test_memory_vs_accuracy_marks_the_pareto_front_and_names_every_point(suite, styles):
    summary, _ = summarize(dataclasses.replace(suite, rounds=settled(suite.rounds)), TARGET)
    ax = figures.memory_vs_accuracy(summary, styles).axes[0]
    points = {c.get_label(): c.lines[0].get_xydata()[0] for c in ax.containers}
    # at the memory a device needs to take part: the smallest task offered (device 0, seed 0)
    assert points["fedavg (over budget)"] == pytest.approx([5.0, 0.86])
    assert points["neulite"] == pytest.approx([1.5, summary.loc["neulite", "final"]])  # stage 1
    widths = {c.get_label(): c.lines[2][0].get_segments()[0] for c in ax.containers}  # the horizontal bar
    assert widths["neulite"][:, 0] == pytest.approx([1.5, (3 * MB + MB // 2 + 3 * 4096 + 1024) / MB])  # to stage 3
    assert next(c for c in ax.containers if c.get_label() == "fedavg (over budget)").lines[0].get_markerfacecolor() \
        == "none"  # hollow: ran over budget
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front, intervals apart (within budget)")
    # fedavg ran over budget, so it is no achievable trade-off; heterofl (1.5 MB too) is dominated by neulite
    assert list(front.get_xdata()) == pytest.approx([1.5])
    names = {t.get_gid(): t.get_text() for t in ax.texts}
    assert names == {"name fedavg": "fedavg (over budget)", "name heterofl": "heterofl", "name neulite": "neulite"}


def test_memory_vs_accuracy_draws_no_front_while_a_method_within_budget_still_moves(suite, styles):
    """A front claims that nothing beats its points; a method still moving may yet, or fall below."""
    def drawn(rounds: pd.DataFrame) -> Axes:
        return figures.memory_vs_accuracy(summarize(dataclasses.replace(suite, rounds=rounds), TARGET)[0],
                                          styles).axes[0]

    def front_gids(ax: Axes) -> list[str]:
        return [c.get_gid() for c in ax.collections if (c.get_gid() or "").startswith("front")]

    rounds = settled(suite.rounds)
    over = (rounds["label"] == "fedavg") & (rounds["round"] == 4)
    rounds.loc[over, "accuracy"] -= 0.02  # fedavg, over budget and so no candidate, still rising
    ax = drawn(rounds)
    assert front_gids(ax) == ["front neulite"]
    assert {t.get_gid(): t.get_text() for t in ax.texts}["name fedavg"] == "fedavg (over budget) (moving)"
    fourth = (rounds["label"] == "heterofl") & (rounds["round"] == 4)
    rounds.loc[fourth, "accuracy"] -= 0.02  # heterofl, below the front, still rising: it may yet beat it
    ax = drawn(rounds)
    assert front_gids(ax) == [] and not [line for line in ax.get_lines() if (line.get_gid() or "").startswith("pareto")]
    assert {t.get_gid(): t.get_text() for t in ax.texts}["name heterofl"] == "heterofl (moving)"
    assert ax.get_legend().get_title().get_text().endswith(
        "(moving): not at its plateau\nno front: 1 within budget not at their plateau")


def test_the_front_keeps_only_methods_shown_better_than_the_cheaper_ones():
    """A costlier method whose interval overlaps the cheaper front method's is not drawn on the
    front: it is not shown to gain anything."""
    x = np.array([1.0, 2.0, 3.0, 4.0])
    low, high = np.array([0.5, 0.55, 0.7, 0.72]), np.array([0.6, 0.65, 0.8, 0.9])
    front = np.array([True, True, True, True])
    assert figures.separated_front(x, low, high, front).tolist() == [True, False, True, False]
    assert figures.separated_front(x, low, high, np.array([False, True, False, True])).tolist() == \
        [False, True, False, True]  # 0.72 > 0.65


def test_points_on_one_memory_value_stay_at_their_values_and_are_named_apart():
    """Nothing is moved along an axis to make room (a nudge along the MB axis reads as memory);
    the names of points on one memory value are spread apart instead, with leader lines."""
    summary = pd.DataFrame({"task_min_mb": [3.0, 3.02, 3.0, 1.0], "task_max_mb": [3.0, 4.0, 3.5, 1.0],
                            "final": [0.8, 0.8, 0.79, 0.5],
                            "final_lo": [math.nan] * 4, "final_hi": [math.nan] * 4, "seeds": [1] * 4},
                           index=["a", "b", "c", "d"])
    styles = method_styles({label: label for label in summary.index})
    for label, style in styles.items():
        style["name"] = label
    fig = figures.memory_vs_accuracy(summary, styles)
    ax = fig.axes[0]
    fig.canvas.draw()
    drawn = {c.get_label(): tuple(c.lines[0].get_xydata()[0]) for c in ax.containers}
    assert drawn == {label: (row.task_min_mb, row.final) for label, row in summary.iterrows()}
    assert all(c.lines[0].get_transform() == ax.transData for c in ax.containers)
    texts = {t.get_text(): Text.get_window_extent(t) for t in ax.texts}  # the text, not its leader line
    assert sorted(texts) == ["a", "b", "c", "d"]
    boxes = [texts[label] for label in "abc"]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_neulite_stage_figures_show_every_stage_exactly(suite, styles, tmp_path):
    ax = stages.neulite_stage_memory(suite.clients, styles).axes[0]
    totals = np.sum([[p.get_height() for p in c] for c in ax.containers], axis=0)
    tops = [max(need("neulite", s, r, d) for s in (0, 1) for r in range(1, 6) if stage_of(r) == stage
                for d in trained_devices("neulite", s, r)) for stage in (1, 2, 3)]
    assert totals == pytest.approx([t / MB for t in tops])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
    ax = stages.neulite_stage_accuracy(suite.rounds, styles).axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    full = [mean_over_seeds(accuracy("neulite", s, r) for s in (0, 1)) for r in range(1, 6)]
    assert lines["full model"] == pytest.approx(full)
    assert lines["stage model"] == pytest.approx([a + 0.05 for a in full])
    strip = [(p.get_gid(), p.get_x() + p.get_width() / 2) for p in ax.patches
             if (p.get_gid() or "").startswith("stage")]
    assert strip == [("stage 1", 1.5), ("stage 2", 3.5), ("stage 3", 5.0)]
    assert stages.neulite_stage_memory(suite.clients[suite.clients["label"] != "neulite"], styles) is None
    # a cyclic schedule over many rounds: every round's stage, in order, however many spans
    rounds = pd.DataFrame({"label": "neulite", "seed": 0, "round": range(1, 31),
                           "stage": [(r - 1) % 3 + 1 for r in range(1, 31)], "evals.full.accuracy": 0.5})
    ax = stages.neulite_stage_accuracy(rounds, named(suite)).axes[0]
    gids = [p.get_gid() for p in ax.patches if (p.get_gid() or "").startswith("stage")]
    assert gids == [f"stage {(r - 1) % 3 + 1}" for r in range(1, 31)]


def test_the_stage_table_gives_each_stages_peaks_and_the_fleet_it_fits(suite):
    """NEULITE.md's per-stage peaks as a table: the estimate a device needs, the highest measured
    peak, and the share of the fleet each stage fits, for every stage."""
    rows = stages.stage_table(suite.clients).set_index("Stage")
    assert list(rows.index) == ["1", "2", "3"] and set(rows["Label"]) == {"neulite"}
    for stage in (1, 2, 3):
        rounds = [(s, r) for s in (0, 1) for r in range(1, 6) if stage_of(r) == stage]
        estimated = max(need("neulite", s, r, d) for s, r in rounds for d in range(len(BUDGETS)))
        measured = max(need("neulite", s, r, d) for s, r in rounds for d in trained_devices("neulite", s, r))
        fits_share = sum(len(fits("neulite", s, r)) for s, r in rounds) / len(rounds) / len(BUDGETS)
        assert rows.loc[str(stage), "Estimated peak (MB)"] == f"{estimated / MB:.2f}"
        assert rows.loc[str(stage), "Measured peak (MB)"] == f"{measured / MB:.2f}"
        assert rows.loc[str(stage), "Fleet that fits (%)"] == f"{100 * fits_share:.1f}"
        assert rows.loc[str(stage), "Clients trained"] == sum(len(trained_devices("neulite", s, r)) for s, r in rounds)
    assert rows["Fleet that fits (%)"].tolist() != ["100.0"] * 3  # stage 3 does not fit every device
    assert stages.stage_table(suite.clients[suite.clients["label"] != "neulite"]) is None


def test_time_to_target_uses_device_time_and_speedup(suite, styles):
    summary, notes = summarize(suite, TARGET)
    assert [n for n in notes if "plateau" not in n] == [
        "fedavg: 67% of its trained clients exceeded their memory budget; its accuracy and time are not reachable "
        "on this fleet"]
    per_seed = {label: [time_to_target_of(label, s) for s in (0, 1)] for label in ("fedavg", "heterofl", "neulite")}
    expected = {label: mean_over_seeds(times) for label, times in per_seed.items()}
    assert expected["fedavg"] == pytest.approx(25.2)  # round 4 at 6.0 s and 6.6 s a round on the devices
    ax = figures.time_to_target(summary, styles, TARGET).axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx(list(expected.values()))
    ratios = {label: [f / t for f, t in zip(per_seed["fedavg"], times, strict=True)]
              for label, times in per_seed.items()}
    for label in ("heterofl", "neulite"):  # paired by seed: the mean of the per-seed ratios, their range
        pair = ratios[label]
        assert summary.loc[label, ["speedup", "speedup_lo", "speedup_hi"]].tolist() == pytest.approx(
            [mean_over_seeds(pair), min(pair), max(pair)])
    assert summary.loc["fedavg", "speedup"] == 1.0 and math.isnan(summary.loc["fedavg", "speedup_lo"])
    texts = texts_before = [t.get_text() for t in ax.texts if t.get_gid() != "notes"]
    assert texts == ["×1.00 (reference)", *(f"×{mean_over_seeds(ratios[label]):.2f} (×{min(ratios[label]):.2f}–"
                                            f"×{max(ratios[label]):.2f})" for label in ("heterofl", "neulite"))]
    note = next(t for t in ax.texts if t.get_gid() == "notes").get_text()
    assert "speed-up only where every seed of both reached it" in note
    assert ax.get_yticklabels()[0].get_text() == "fedavg (over budget)"
    assert ax.patches[0].get_hatch() == "//"
    partly = summary.copy()
    partly.loc["heterofl", ["reached", "speedup"]] = 1, math.nan  # one seed of two reached it (summarize's rule)
    partial = figures.time_to_target(partly, styles, TARGET).axes[0]
    texts = [t.get_text() for t in partial.texts if t.get_gid() != "notes"]
    assert texts[1] == "speed-up n/a, 1/2 seeds reached it" and texts[2] == texts_before[2]
    assert [(p.get_hatch(), p.get_alpha()) for p in partial.patches] == [("//", None), ("xx", 0.45), ("", None)]
    assert "reached it in only some seeds" in next(t for t in partial.texts if t.get_gid() == "notes").get_text()
    assert figures.time_to_target(summarize(suite, 0.99)[0], styles, 0.99) is None  # nobody reached it: no chart


def test_device_time_is_split_into_compute_and_communication(suite, styles):
    """Per label, a trained client's mean compute and communication seconds, stacked, with
    communication's share written beside the bar and in the table; the device time model's inputs
    (the recorded fleet: 10 GFLOP/s, 1.25e6 and 6.25e6 bytes/s) in the legend of every time figure."""
    summary, _ = summarize(suite, TARGET)
    mean_round = {label: mean_over_seeds(device_round(label, s) for s in (0, 1)) for label in summary.index}
    assert summary["comm_share"].to_dict() == pytest.approx({k: 1 - COMPUTE_SHARE[k] for k in summary.index})
    assert display(summary, TARGET)["Communication (% of device time)"].tolist() == ["80", "60", "50"]
    ax = figures.device_time_split(summary, styles, suite.fleet).axes[0]
    compute = [p for p in ax.patches if p.get_gid() == "compute"]
    comm = [p for p in ax.patches if p.get_gid() == "comm"]
    assert [p.get_width() for p in compute] == pytest.approx([COMPUTE_SHARE[k] * mean_round[k] for k in summary.index])
    assert [p.get_width() for p in comm] == pytest.approx([(1 - COMPUTE_SHARE[k]) * mean_round[k]
                                                           for k in summary.index])
    assert [t.get_text() for t in ax.texts] == ["80% communication", "60% communication", "50% communication"]
    model = "device time model: 10 GFLOP/s of training, links 10 Mbit/s up and 50 Mbit/s down"
    assert " ".join(ax.get_legend().get_title().get_text().split()) == model + " hatched: ran over budget"
    assert [p.get_hatch() for p in compute] == [p.get_hatch() for p in comm] == ["//", "", ""]  # fedavg: over budget
    timed = figures.accuracy_vs_time(suite.rounds, styles, suite.fleet).axes[0]
    assert model in " ".join(timed.get_legend().get_title().get_text().split())
    notes = next(t for t in figures.time_to_target(summary, styles, TARGET, suite.fleet).axes[0].texts
                 if t.get_gid() == "notes")
    assert notes.get_text().endswith(model)
    assert figures.device_time_split(summary.assign(compute_s=math.nan), styles, suite.fleet) is None


def test_a_speed_up_needs_every_seed_of_both_to_reach_the_target(suite):
    """A mean over the seeds that got there would flatter a method that mostly did not."""
    rounds = suite.rounds.copy()
    slow = (rounds["label"] == "heterofl") & (rounds["seed"] == 1)
    rounds.loc[slow, "accuracy"] = 0.5  # seed 1 never reaches 73%
    summary, notes = summarize(dataclasses.replace(suite, rounds=rounds), TARGET)
    assert summary.loc["heterofl", "reached"] == 1 and math.isnan(summary.loc["heterofl", "speedup"])
    assert summary.loc["neulite", "speedup"] == pytest.approx(mean_over_seeds(
        time_to_target_of("fedavg", s) / time_to_target_of("neulite", s) for s in (0, 1)))
    assert "heterofl: reached 73% in 1 of 2 seeds; time is their mean" in notes


def test_notes_and_legends_say_what_is_drawn(suite, styles):
    _, notes = summarize(suite, 0.99)
    assert any(note.startswith("no method reached 99%: time to target n/a") for note in notes)
    untimed = suite.rounds.drop(columns="device_wall_time").assign(device_wall_time=math.nan)
    _, notes = summarize(dataclasses.replace(suite, rounds=untimed), 0.99)  # records before device time
    assert not any(note.startswith("no method reached") for note in notes)
    rounds = suite.rounds.copy()
    rounds.loc[(rounds["label"] == "fedavg") & (rounds["seed"] == 1), "accuracy"] = 0.5
    assert "fedavg has not reached 73% in every seed: speed-up n/a" in summarize(
        dataclasses.replace(suite, rounds=rounds), TARGET)[1]
    ax = figures.accuracy_vs_round(suite.rounds, styles).axes[0]
    styles_drawn = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles_drawn["fedavg (over budget)"] == "--" and styles_drawn["heterofl"] == "-"
    title = ax.get_legend().get_title().get_text()
    assert title.endswith("min–max range (2 seeds), clipped to 0–100%\ndashed: ran over budget")
    settled_summary = summarize(dataclasses.replace(suite, rounds=settled(suite.rounds)), TARGET)[0]
    legend = figures.memory_vs_accuracy(settled_summary, styles).axes[0].get_legend()
    assert legend.get_title().get_text() == ("hollow: ran over budget\n"
                                             "error bars: min–max range (2 seeds), clipped to 0–100%")


def test_clients_measured_below_their_estimate_are_noted(suite):
    clients = suite.clients.copy()
    trained = clients.index[(clients["label"] == "heterofl") & (clients["status"] == "trained")]
    clients.loc[trained[:2], "memory.tensor.peak"] -= 1000  # e.g. FjORD's steps that drew a narrower width
    _, notes = summarize(dataclasses.replace(suite, clients=clients), TARGET)
    assert f"heterofl: 2 of {len(trained)} trained clients measured less than their task's estimate" in "\n".join(notes)
    assert not any("measured less" in note for note in summarize(suite, TARGET)[1])


def test_accuracy_at_chance_while_training_loss_falls_is_flagged_with_the_methods_cause(suite):
    """heterofl made to read 10% in every round (the test set of 20 cannot tell up to 30% from
    guessing one of 10 classes) while its clients' loss falls from 2.40 to 0.80 in round 5."""
    rounds, clients = suite.rounds.copy(), suite.clients.copy()
    rounds.loc[rounds["label"] == "heterofl", "accuracy"] = 0.1
    hetero = clients["label"] == "heterofl"
    clients.loc[hetero, "train_loss"] = 2.8 - 0.4 * clients.loc[hetero, "round"]
    manifests = {key: {**m, "chance_cause": "its statistics"} if key[0] == "heterofl" else m
                 for key, m in suite.manifests.items()}
    stuck = dataclasses.replace(suite, rounds=rounds, clients=clients, manifests=manifests)
    flagged = [n for n in summarize(stuck, TARGET)[1] if "chance" in n]
    assert flagged == ["heterofl: evaluated accuracy stays at chance (10.0% over its last rounds; guessing one of "
                       "10 classes scores 10%) while its clients' training loss fell from 2.40 to 0.80: the "
                       "evaluated model does not show what training learned. Likely cause: its statistics."]
    unnamed = dataclasses.replace(stuck, manifests=suite.manifests)
    assert next(n for n in summarize(unnamed, TARGET)[1] if "chance" in n).endswith(
        "The method records no likely cause.")
    flat = dataclasses.replace(stuck, clients=suite.clients)  # loss 1.0 throughout: nothing learned
    assert not any("chance" in n for n in summarize(flat, TARGET)[1])
    rounds.loc[rounds["label"] == "heterofl", "accuracy"] = 0.31  # above 10% + 3 standard errors
    assert not any("chance" in n for n in summarize(dataclasses.replace(stuck, rounds=rounds), TARGET)[1])


def test_summary_table_matches_hand_computed_values(rendered):
    _, out = rendered
    rows = table_rows((out / "summary.md").read_text())
    assert "## Peak memory per stage" in (out / "summary.md").read_text()  # NeuLite's stages as a table too
    fedavg = rows["fedavg (over budget)"]
    assert fedavg["Seeds"] == "2 (min–max range)"
    assert fedavg["Accuracy, last 10% of rounds (%)"] == "86.0 (85.0–87.0)"  # final accuracies 0.85 and 0.87
    assert fedavg["Best accuracy (%)"] == "86.0 (85.0–87.0)"
    assert fedavg["Peak measured (MB)"] == f"{(5 * MB + 2 * 4096 + 1024) / MB:.2f}"
    assert fedavg["Smallest task (MB)"] == "5.00" and fedavg["Largest task (MB)"] == f"{(5 * MB + 13312) / MB:.2f}"
    assert fedavg["Fleet that fits (%)"] == "50.0" and fedavg["Over budget (% of trained)"] == "66.7"
    assert fedavg["Participation (%)"] == "75.0"
    assert fedavg["Device time to 73% (s)"] == "25.2 (24.0–26.4)"
    assert fedavg["Speed-up vs fedavg (over budget)"] == "×1.00"
    assert fedavg["Host time (s)"] == "10.5"  # 5 rounds at 2.0 s and 2.2 s on the host
    assert fedavg["Bytes up (MB)"] == "7.50"  # devices 0, 1, 2: (1 + 2 + 3) / 4 MB a round, 5 rounds
    assert fedavg["Bytes down (MB)"] == "15.00"
    assert rows["heterofl"]["Speed-up vs fedavg (over budget)"] == "×1.60 (×1.60–×1.60)"  # 24/15 and 26.4/16.5
    assert fedavg["Last round (%)"] == "86.0 (85.0–87.0)" and fedavg["Change over the last 20% (points)"] == "+10.0"
    # the best within budgets is neulite (81%); fedavg ran over budget above it, heterofl's range lies below
    assert [rows[k]["Against the best"] for k in ("fedavg (over budget)", "heterofl", "neulite")] == [
        "above (moving)", "below (moving)", "best (moving)"]  # every run still rises into round 5
    assert rows["heterofl"]["Participation (%)"] == "75.0" and rows["heterofl"]["Fleet that fits (%)"] == "100.0"
    assert rows["neulite"]["Fleet that fits (%)"] == "85.0"  # 4, 4, 3, 3, 3 of 4 devices
    assert rows["neulite"]["Seeds"] == "2 (min–max range)" and rows["neulite"]["Rounds"] == "5"
    csv = pd.read_csv(out / "summary.csv", index_col="label")
    assert csv.loc["fedavg", "over_budget"] == pytest.approx(2 / 3) and csv.loc["heterofl", "fits"] == 1.0
    assert csv.loc["fedavg", "ttt"] == pytest.approx(25.2) and csv.loc["fedavg", "final_hi"] == pytest.approx(0.87)


def test_colours_are_fixed_per_method_across_reports(tmp_path):
    one = method_styles({"fedavg": "fedavg", "neulite": "neulite"})
    other = method_styles({"aaa": "allsmall", "fedavg": "fedavg", "neulite": "neulite", "nl-plain": "neulite",
                           "zz": "some-new-method"})
    assert one["fedavg"]["color"] == other["fedavg"]["color"] == METHOD_COLORS["fedavg"]
    assert one["neulite"]["color"] == other["neulite"]["color"] == METHOD_COLORS["neulite"]
    assert other["nl-plain"]["color"] != other["neulite"]["color"]  # an ablation: a shade of its method's colour
    assert other["zz"]["color"] == method_styles({"zz": "some-new-method"})["zz"]["color"]
    assert other["nl-plain"]["marker"] != other["neulite"]["marker"] == one["neulite"]["marker"] == "*"


def test_every_built_in_method_has_its_own_colour_and_marker():
    """Eleven methods on one plot: no two share a marker, no two a colour, and the memory
    categories' neighbours in a stacked bar differ clearly."""
    from reports.style import CATEGORY_COLORS

    styles = method_styles({m: m for m in METHOD_COLORS})
    assert len({s["marker"] for s in styles.values()}) == len({s["color"] for s in styles.values()}) == 11
    colors = list(CATEGORY_COLORS.values())
    assert min(math.dist(x, y) for x, y in itertools.pairwise(colors)) > 0.25


# ---- partial records -------------------------------------------------------------------------

def test_partial_records_render_with_notes(tmp_path):
    suite_dir = write_suite(tmp_path, labels=("fedavg", "heterofl", "neulite", "toolarge"), null_rounds=2)
    with open(suite_dir / "fedavg-seed1" / "rounds.jsonl", "a") as f:
        f.write('{"round": 6, "accura')  # torn last line
    shutil.rmtree(suite_dir / "heterofl-seed1")  # one seed only (the other never started)
    for name in ("rounds.jsonl", "clients.jsonl"):  # neulite seed 1 still running: 3 of 5 rounds
        path = suite_dir / "neulite-seed1" / name
        path.write_text("".join(line for line in path.read_text().splitlines(True)
                                if json.loads(line)["round"] <= 3))
    report = render(suite_dir, tmp_path / "out", target=TARGET)
    notes = "\n".join(report.notes)
    assert "fedavg-seed1/rounds.jsonl: line 6 does not parse" in notes
    assert "heterofl seed 1: no run folder" in notes
    assert "neulite seed 1: 3 of 5 rounds recorded" in notes
    assert "toolarge: no client trained" in notes
    assert "neulite: seeds recorded 3 to 5 rounds" in notes
    assert all((tmp_path / "out" / f"{stem}.png").exists() for stem in FIGURES)
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "line 6 does not parse" in markdown.split("## Notes")[1]
    rows = table_rows(markdown)
    assert rows["heterofl"]["Seeds"] == "1" and rows["heterofl"]["Accuracy, last 10% of rounds (%)"] == "75.0"
    assert rows["toolarge"]["Peak measured (MB)"] == "–" and rows["toolarge"]["Participation (%)"] == "0.0"
    assert rows["toolarge"]["Fleet that fits (%)"] == "0.0" and rows["toolarge"]["Smallest task (MB)"] == "100.00"
    assert rows["toolarge"]["Device time to 73% (s)"] == "not reached"
    assert rows["neulite"]["Rounds"] == "3–5"
    suite = load_suite(suite_dir)
    ax = figures.accuracy_vs_round(suite.rounds, named(suite)).axes[0]
    neulite = next(line for line in ax.get_lines() if line.get_label() == "neulite")
    assert list(neulite.get_xdata()) == [3, 4, 5]  # accuracy null in rounds 1-2
    assert neulite.get_ydata()[-1] == pytest.approx(accuracy("neulite", 0, 5))  # seed 1 stopped at 3


def test_no_fedavg_and_missing_suite_json(tmp_path):
    suite_dir = write_suite(tmp_path, labels=("heterofl", "neulite"), seeds=(0,))
    (suite_dir / "suite.json").unlink()
    report = render(suite_dir, None, target=TARGET)
    assert report.out == suite_dir / "report"
    assert "suite.json: missing" in report.notes
    assert any("no FedAvg run" in note for note in report.notes)
    rows = table_rows((suite_dir / "report" / "summary.md").read_text())
    assert sorted(rows) == ["heterofl", "neulite"]
    assert rows["heterofl"]["Speed-up vs FedAvg"] == "n/a"
    assert rows["neulite"]["Accuracy, last 10% of rounds (%)"] == "80.0"  # one seed: no interval


def test_stale_stage_figures_are_removed(tmp_path):
    suite_dir = write_suite(tmp_path, labels=("fedavg", "neulite"), seeds=(0,), rounds=2)
    render(suite_dir, tmp_path / "out")
    assert (tmp_path / "out" / "neulite_stage_memory.png").exists()
    shutil.rmtree(suite_dir / "neulite-seed0")
    report = render(suite_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "neulite_stage_memory.png").exists()
    assert "neulite_stage_memory: nothing to plot yet; not rendered" in report.notes


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="holds no run records") as empty:
        load_suite(tmp_path)
    assert "suite folders" not in str(empty.value)
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "suite.json").write_text("{}")  # given --out, where the suite's folder is
    with pytest.raises(ReportError, match=r"its suite folders: quick \(give one of those\)"):
        load_suite(tmp_path)


# ---- command line ----------------------------------------------------------------------------

def test_cli_main(suite_dir, tmp_path, capsys):
    assert main([str(suite_dir), "-o", str(tmp_path / "out"), "--target", "0.73"]) == 0
    assert f"open {tmp_path / 'out' / 'index.html'}" in capsys.readouterr().out
    assert "Device time to 73% (s)" in (tmp_path / "out" / "summary.md").read_text()
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a folder of suite records" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main([str(suite_dir), "--target", "90"])
    assert refused.value.code == 2 and "--target must be a fraction in (0, 1]" in capsys.readouterr().err


def with_target(folder, target: float):
    """The suite folder with ``report.target`` recorded in its suite.json, as a suite file gives it."""
    info = json.loads((folder / "suite.json").read_text())
    info["config"]["report"] = {"target": target}
    (folder / "suite.json").write_text(json.dumps(info))
    return folder


def test_the_suites_report_target_is_the_default_target(tmp_path, capsys):
    """A suite's ``report.target`` sets time to target unless --target gives one; suites compared
    that ask for different targets need --target."""
    a = with_target(write_suite(tmp_path / "a", labels=("fedavg", "neulite")), 0.73)
    assert main([str(a), "-o", str(tmp_path / "out")]) == 0
    assert "Device time to 73% (s)" in (tmp_path / "out" / "summary.md").read_text()
    assert main([str(a), "-o", str(tmp_path / "out"), "--target", "0.8"]) == 0
    assert "Device time to 80% (s)" in (tmp_path / "out" / "summary.md").read_text()
    b = rename_suite(with_target(write_suite(tmp_path / "b", labels=("neulite",)), 0.5), "other")
    capsys.readouterr()
    assert main([str(a), str(b), "-o", str(tmp_path / "both")]) == 2
    assert "different targets (report.target: 0.5, 0.73); give one with --target" in capsys.readouterr().err
    assert main([str(a), str(b), "-o", str(tmp_path / "both"), "--target", "0.5"]) == 0
    assert main([str(write_suite(tmp_path / "c", labels=("neulite",))), "-o", str(tmp_path / "c_out")]) == 0
    assert "Device time to 90% (s)" in (tmp_path / "c_out" / "summary.md").read_text()  # none recorded: 0.9


def test_a_report_of_some_labels_draws_only_those(suite_dir, tmp_path, capsys):
    """--labels: every table and figure over those labels alone; an unknown label is one line."""
    assert main([str(suite_dir), "-o", str(tmp_path / "two"), "--labels", "neulite, fedavg"]) == 0
    assert sorted(table_rows((tmp_path / "two" / "summary.md").read_text())) == ["fedavg (over budget)", "neulite"]
    assert pd.read_csv(tmp_path / "two" / "summary.csv")["label"].tolist() == ["fedavg", "neulite"]
    capsys.readouterr()
    assert main([str(suite_dir), "-o", str(tmp_path / "bad"), "--labels", "neulite,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels: 'nope' not in the records; they hold fedavg, heterofl, neulite" in err


def test_suite_summary_is_the_reports_numbers(suite_dir, tmp_path):
    """The documented API: the summary as numbers, the same as the rendered table's; its headline is
    the mean over seeds of each seed's last tenth, not one seed's last value."""
    from reports.tables import suite_summary

    summary, notes = suite_summary(suite_dir, target=TARGET)
    expected, expected_notes = summarize(load_suite(suite_dir), TARGET)
    pd.testing.assert_frame_equal(summary, expected)
    assert notes == expected_notes
    rounds, _ = records(suite_dir)
    evaluated = rounds.dropna(subset=["accuracy"]).sort_values("round")
    per_seed = evaluated.groupby(["label", "seed"])["accuracy"].apply(lambda a: last_rounds(a).mean())
    assert summary["final"].to_dict() == pytest.approx(per_seed.groupby("label").mean().to_dict())


def test_python_m_reports_imports_no_training_code(suite_dir, tmp_path):
    out = tmp_path / "via-m"
    done = subprocess.run([sys.executable, "-m", "reports", str(suite_dir), "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").exists() and (out / "accuracy_vs_round.svg").exists()
    probe = ("import sys, reports.cli; "  # of the harness, only the record schema, which imports nothing
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('harness', 'neulite', 'baselines', 'torch')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "['harness', 'harness.schema']"


@pytest.mark.slow
def test_renders_a_real_quick_suite(tmp_path):
    """End to end: the harness's quick suite, two rounds, rendered from its records."""
    run = subprocess.run([sys.executable, "-m", "harness", "run", "suites/quick.toml", "--out", str(tmp_path),
                          "--set", "rounds=2"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    suite_dir = tmp_path / "quick"
    report = render(suite_dir, tmp_path / "report")
    for stem in ("accuracy_vs_round", "memory_by_method", "participation", "summary"):
        assert any(f.name.startswith(stem) for f in report.files), stem
    rows = table_rows((tmp_path / "report" / "summary.md").read_text())
    assert rows and all(row["Rounds"] == "2" for row in rows.values())


def test_reports_speaks_the_harness_record_vocabulary():
    """``reports`` keeps its own copies (it imports no training code); they must not drift."""
    from harness.fleet import MB as harness_mb
    from harness.memory import CATEGORIES as harness_categories
    from reports.load import CATEGORIES
    from reports.style import MB

    assert CATEGORIES == harness_categories and MB == harness_mb


# ---- comparing suites, tables and APIs for tools -----------------------------------------------

def rename_suite(folder: Path, name: str, **config: object) -> Path:
    """A copy of a synthetic suite under another name (and config values), as the harness would write it."""
    info = json.loads((folder / "suite.json").read_text())
    info["suite"] = info["config"]["name"] = name
    for dotted, value in config.items():
        section, key = dotted.split("__")
        info["config"][section][key] = value
    (folder / "suite.json").write_text(json.dumps(info))
    return folder


def test_one_report_compares_several_suites(tmp_path):
    a = rename_suite(write_suite(tmp_path / "a", labels=("fedavg", "neulite")), "tight", fleet__distribution="trace")
    b = rename_suite(write_suite(tmp_path / "b", labels=("neulite", "heterofl")), "loose",
                     fleet__distribution="uniform")
    report = render([a, b], tmp_path / "out", target=TARGET)
    markdown = (tmp_path / "out" / "summary.md").read_text()
    rows = table_rows(markdown)
    assert sorted(rows) == ["fedavg (over budget)", "heterofl", "loose/neulite", "tight/neulite"]  # clash: prefixed
    headline = "Accuracy, last 10% of rounds (%)"
    assert rows["tight/neulite"][headline] == rows["loose/neulite"][headline]
    assert "## Suites compared" in markdown and "| fleet.distribution | trace | uniform |" in markdown
    assert report.out == tmp_path / "out" and (tmp_path / "out" / "summary.csv").exists()
    with pytest.raises(ReportError, match="give the output folder"):
        render([a, b])


def test_compared_suites_draw_a_panel_each_and_a_front_each_when_unlike(tmp_path):
    """Accuracy figures: one panel per suite, each with its own labels; memory against accuracy: one
    Pareto front per suite when their models differ (a front across them would trade unlike things)."""
    a = rename_suite(write_suite(tmp_path / "a", labels=("heterofl", "neulite")), "cnn-suite")
    b = rename_suite(write_suite(tmp_path / "b", labels=("heterofl", "neulite")), "resnet-suite",
                     model__name="resnet18")
    suite = load_suites([a, b], allow_mixed=True)
    styles = method_styles(suite.methods)
    for label, style in styles.items():
        style["name"] = label
    for build in (figures.accuracy_vs_round, figures.accuracy_vs_time):
        drawn = panels(build(suite.rounds, styles, panels=suite.suites))
        assert {title: sorted(p["own"]) for title, p in drawn.items()} == {
            "cnn-suite": ["cnn-suite/heterofl", "cnn-suite/neulite"],
            "resnet-suite": ["resnet-suite/heterofl", "resnet-suite/neulite"]}
    moving = figures.memory_vs_accuracy(summarize(suite, TARGET)[0], styles, suite.suites).axes[0]
    assert moving.get_legend().get_title().get_text().endswith(
        "no front of cnn-suite: 2 within budget not at their plateau\n"
        "no front of resnet-suite: 2 within budget not at their plateau")  # every run still rising
    summary, _ = summarize(dataclasses.replace(suite, rounds=settled(suite.rounds)), TARGET)
    ax = figures.memory_vs_accuracy(summary, styles, suite.suites).axes[0]
    fronts = {line.get_gid(): list(line.get_xdata()) for line in ax.get_lines()
              if (line.get_gid() or "").startswith("pareto")}
    assert sorted(fronts) == ["pareto cnn-suite", "pareto resnet-suite"]
    for name in ("cnn-suite", "resnet-suite"):  # each front over its own suite's points only
        own = summary[summary.index.str.startswith(name)]
        assert set(fronts[f"pareto {name}"]) <= set(own["task_min_mb"])
    joint = figures.memory_vs_accuracy(summary, styles).axes[0]
    assert [line.get_gid() for line in joint.get_lines() if (line.get_gid() or "").startswith("pareto")] == ["pareto"]


def test_suites_on_other_data_or_models_are_refused_unless_allowed(tmp_path, capsys):
    a = rename_suite(write_suite(tmp_path / "a", labels=("fedavg",)), "cnn-suite")
    b = rename_suite(write_suite(tmp_path / "b", labels=("fedavg",)), "resnet-suite", model__name="resnet18")
    assert main([str(a), str(b), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.name: cnn vs resnet18" in err and "--allow-mixed" in err
    assert main([str(a), str(b), "-o", str(tmp_path / "out"), "--allow-mixed"]) == 0


def test_records_api_returns_rounds_and_clients_in_one_call(suite_dir):
    rounds, clients = records(suite_dir)
    assert len(rounds) == 3 * 2 * 5 and len(clients) == 3 * 2 * 5 * len(BUDGETS)
    assert {"accuracy", "device_wall_time", "evals.full.accuracy"} <= set(rounds.columns)
    assert {"memory.tensor.peak", "estimate.peak", "status"} <= set(clients.columns)


def test_every_suite_that_ships_runs_three_seeds_or_more():
    from harness.suites import load_suite as load_suite_file

    for path in sorted((ROOT / "suites").glob("*.toml")):
        assert len(load_suite_file(path).seeds) >= 3, path.name


def test_the_harness_api_needs_no_hidden_step():
    """``load_suite`` in a fresh interpreter finds the built-in methods on its own."""
    probe = ("from harness.suites import load_suite; "
             "cfg = load_suite('suites/quick.toml', ['rounds=1']); print(cfg.methods[0].method)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "fedavg", done.stderr


def test_records_without_device_time_read_n_a_not_not_reached(tmp_path):
    suite_dir = write_suite(tmp_path, labels=("fedavg", "heterofl"), seeds=(0,))
    for run in ("fedavg-seed0", "heterofl-seed0"):  # as written before the device time model
        path = suite_dir / run / "rounds.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("device")}) + "\n"
                                for r in rows))
    report = render(suite_dir, tmp_path / "out", target=TARGET)
    rows = table_rows((tmp_path / "out" / "summary.md").read_text())
    assert rows["heterofl"]["Device time to 73% (s)"] == "n/a"
    assert any("heterofl: no device time in its records" in note for note in report.notes)


def test_partly_reached_times_say_which_interval_they_have(tmp_path):
    suite = load_suite(write_suite(tmp_path, labels=("heterofl",), seeds=(0, 1, 2)))
    summary, _ = summarize(suite, 0.78)  # round 5 gives 0.75, 0.77, 0.79: only seed 2 reaches it
    rows = display(summary, 0.78).set_index("Label")
    assert rows.loc["heterofl", "Device time to 78% (s)"] == f"{device_time('heterofl', 2, 5):.1f} (1/3 seeds)"
    summary, _ = summarize(suite, 0.76)  # seeds 1 and 2 reach it at round 5
    rows = display(summary, 0.76).set_index("Label")
    times = [device_time("heterofl", s, 5) for s in (1, 2)]
    assert rows.loc["heterofl", "Device time to 76% (s)"] == (
        f"{np.mean(times):.1f} ({min(times):.1f}–{max(times):.1f}) (2/3 seeds, min–max range)")


def test_clients_dropped_at_the_deadline_are_counted(tmp_path):
    suite_dir = write_suite(tmp_path, labels=("heterofl",), seeds=(0,))
    path = suite_dir / "heterofl-seed0" / "clients.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if row["round"] == 1 and row["device"] == 0:  # one of the 15 selected clients missed the deadline
            row.update(status="straggler", reason="device time 9.0 s > deadline 5 s")
            del row["memory"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary, _ = summarize(load_suite(suite_dir), TARGET)
    assert summary.loc["heterofl", "dropped"] == pytest.approx(1 / 15)


def test_compared_suites_keep_their_own_fleet_and_fedavg(tmp_path):
    tight = write_suite(tmp_path / "a", labels=("fedavg", "heterofl"), seeds=(0,))
    loose = write_suite(tmp_path / "b", labels=("fedavg", "heterofl"), seeds=(0,))
    for run in ("fedavg-seed0", "heterofl-seed0"):  # the loose suite's devices have twice the memory
        path = loose / run / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["fleet"] = [{**d, "budget": 2 * d["budget"]} for d in manifest["fleet"]]
        path.write_text(json.dumps(manifest))
    suite = load_suites([tight, loose])  # both named "synthetic": told apart by their folders
    assert sorted(suite.labels) == ["a/synthetic/fedavg", "a/synthetic/heterofl", "b/synthetic/fedavg",
                                    "b/synthetic/heterofl"]
    summary, _ = summarize(suite, TARGET)
    assert summary.loc["b/synthetic/heterofl", "reference"] == "b/synthetic/fedavg"  # each suite's own
    styles = method_styles(suite.methods)
    for style in styles.values():
        style["name"] = "x"
    bx = figures.memory_by_method(suite.clients, suite.fleet, styles).axes[1]
    smallest = 5 * MB / MB  # fedavg's smallest task: 5 MB; 2 of 4 devices fit it, or 3 of 4 with twice the memory
    for label, share in (("a/synthetic/fedavg", 0.5), ("b/synthetic/fedavg", 0.75)):
        marker = next(line for line in bx.get_lines() if line.get_gid() == f"fits {label}").get_xydata()[0]
        assert marker == pytest.approx([share, smallest])
    assert len([line for line in bx.get_lines() if line.get_gid() == "fleet"]) == 2
    legend = [text.get_text() for text in bx.get_legend().get_texts()]  # the one legend tells the fleets apart
    assert {"fleet: a/synthetic", "fleet: b/synthetic", "smallest task (fits: marked)"} <= set(legend)


def test_the_band_legend_names_the_intervals_each_round_draws():
    """Three seeds, one stopped after round 3: rounds 4-5 draw a range of two, and the legend says so."""
    from reports.figures import band_note

    rows = [{"label": "a", "seed": s, "round": r, "accuracy": 0.5} for s in range(3) for r in range(1, 6)
            if s < 2 or r <= 3]
    note = band_note(pd.DataFrame(rows))
    assert "95% t-interval (3 seeds)" in note and "min–max range (2 seeds)" in note
    assert band_note(pd.DataFrame([r for r in rows if r["round"] <= 3])).endswith(
        "shaded: 95% t-interval (3 seeds), clipped to 0–100%")


def test_the_fleet_that_fits_is_what_the_gate_held_against_the_budget():
    """A GPU run gating on the estimate plus the allocator's overhead records ``need``: a device
    whose budget covers the estimate but not the need does not fit."""
    from reports.stats import fits_per_round

    clients = pd.DataFrame({"label": "a", "seed": 0, "round": 1, "budget": [10, 10, 10],
                            "estimate.peak": [8, 8, 12], "need": [9, 11, None]})
    assert fits_per_round(clients)["fits"].tolist() == [1 / 3]
    assert fits_per_round(clients.drop(columns="need"))["fits"].tolist() == [2 / 3]


def test_runs_are_found_inside_the_suite_folder_only(tmp_path):
    """suite.json's ``dir`` naming another suite's run, or a run folder that is a link, reads nothing
    from outside; a note says so."""
    other = write_suite(tmp_path / "other", labels=("heterofl",), seeds=(0,))
    folder = write_suite(tmp_path / "mine", labels=("fedavg",), seeds=(0,))
    info = json.loads((folder / "suite.json").read_text())
    info["runs"].append({"label": "heterofl", "method": "heterofl", "seed": 0,
                         "dir": "../../other/synthetic/heterofl-seed0"})
    (folder / "suite.json").write_text(json.dumps(info))
    suite = load_suite(folder)
    assert suite.labels == ["fedavg"]
    assert "suite.json: 1 run(s) point outside the suite folder; ignored" in suite.notes
    shutil.rmtree(folder / "fedavg-seed0")
    (folder / "fedavg-seed0").symlink_to(other / "heterofl-seed0")
    suite = load_suite(folder)
    assert suite.rounds.empty and "fedavg seed 0: its run folder 'fedavg-seed0' is a link; ignored" in suite.notes


@pytest.mark.parametrize(("line", "problem"), [
    ({"round": "5", "accuracy": 0.99}, "no label, method, seed"),
    ({"label": "fedavg", "method": "fedavg", "seed": 0, "round": "5", "accuracy": 0.99, "loss": 1.0, "devices": 4,
      "participated": 3}, "round: wrong type or value"),
    ({"label": "fedavg", "method": "fedavg", "seed": 0, "round": True, "accuracy": 0.99, "loss": 1.0, "devices": 4,
      "participated": 3}, "round: wrong type or value"),
    ({"label": "fedavg", "method": "fedavg", "seed": 0, "round": 2, "accuracy": "0.99", "loss": 1.0, "devices": 4,
      "participated": 3}, "accuracy: wrong type or value"),
    ({"round": 5}, "no label, method, seed, accuracy"),
])
def test_malformed_record_lines_are_torn_with_a_note_and_never_read(tmp_path, line, problem):
    """One check (harness.schema) for the reports and the harness's resume: a line that fails it is skipped."""
    from harness.records import read_jsonl as harness_read

    folder = write_suite(tmp_path, labels=("fedavg",), seeds=(0,))
    path = folder / "fedavg-seed0" / "rounds.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    suite = load_suite(folder)
    assert f"fedavg-seed0/rounds.jsonl: line 6 is not a record ({problem}); skipped" in suite.notes
    assert suite.rounds["round"].tolist() == [1, 2, 3, 4, 5]
    assert suite.rounds["accuracy"].max() < 0.99
    assert [r["round"] for r in harness_read(path)] == [1, 2, 3, 4, 5]


def test_a_bare_client_line_does_not_pass_for_a_client(tmp_path):
    from harness.records import read_jsonl as harness_read

    folder = write_suite(tmp_path, labels=("fedavg",), seeds=(0,))
    path = folder / "fedavg-seed0" / "clients.jsonl"
    whole = len(harness_read(path))
    with path.open("a") as f:
        f.write(json.dumps({"round": 3}) + "\n")
    assert len(harness_read(path)) == whole
    assert any("clients.jsonl: line" in note and "no label" in note for note in load_suite(folder).notes)


def test_an_interrupted_render_leaves_no_page_and_no_truncated_figure(suite_dir, tmp_path, monkeypatch):
    """Killed midway, the folder holds no index.html or summary (so it cannot pass for a finished report)
    and every figure file is either the earlier render's or a whole new one."""
    out = tmp_path / "report"
    render(suite_dir, out, target=TARGET)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".svg")}
    calls = []

    def killed(fig, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(fig, *args, **kwargs)

    import reports.render
    real = reports.render.save
    monkeypatch.setattr(reports.render, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        render(suite_dir, out, target=TARGET)
    names = {p.name for p in out.iterdir()}
    assert not names & {"index.html", "summary.md", "summary.csv"} and not [n for n in names if n.endswith(".tmp")]
    assert all(p.read_bytes() == before[p.name] or p.stat().st_size > 1000 for p in out.iterdir() if p.name in before)
    monkeypatch.undo()
    render(suite_dir, out, target=TARGET)
    assert (out / "index.html").exists()


def test_a_report_that_cannot_be_written_is_one_line(suite_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out in (blocker, blocker / "under"):
        assert main([str(suite_dir), "-o", str(out)]) in (1, 2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and str(blocker) in err


def test_a_path_that_is_not_utf8_is_printed_escaped_not_a_traceback(suite_dir, tmp_path):
    out = os.fsencode(str(tmp_path)) + b"/\xff-report"
    done = subprocess.run([os.fsencode(sys.executable), b"-m", b"reports", os.fsencode(str(suite_dir)), b"-o", out],
                          capture_output=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})  # as a UTF-8 terminal
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines()[-1].startswith("wrote ") and "\\udcff-report" in done.stdout.decode()
    assert os.path.exists(out + b"/index.html")


def test_a_render_writes_every_file_under_the_folders_lock(suite_dir, tmp_path, monkeypatch):
    """Two renders at once once broke index.html: a render writes only while it holds the folder's
    lock, which a second render (another open of the lock file) cannot take until it is released."""
    import fcntl

    import reports.render as rendering

    events = []
    real_replace = rendering.replace_file
    monkeypatch.setattr(rendering.RenderLock, "__enter__",
                        lambda self, enter=rendering.RenderLock.__enter__: (events.append("lock"), enter(self))[1])
    monkeypatch.setattr(rendering.RenderLock, "__exit__",
                        lambda self, *exc, leave=rendering.RenderLock.__exit__: (events.append("unlock"), leave(self)))
    monkeypatch.setattr(rendering, "replace_file", lambda *a: (events.append("write"), real_replace(*a))[1])
    out = tmp_path / "report"
    render(suite_dir, out, target=TARGET)
    assert events[0] == "lock" and events[-1] == "unlock" and events.count("write") >= 3
    monkeypatch.undo()
    with rendering.RenderLock(out):
        other = os.open(out / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
