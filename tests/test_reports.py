"""reports/: figures and tables rendered from records only.

A synthetic suite is written from closed-form values (``accuracy``, ``need``, ``round_time``
below), so every plotted number and table cell can be checked against a value computed here.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reports import figures, stages
from reports.cli import main
from reports.load import CATEGORIES, ReportError, load_suite
from reports.page import FIGURES
from reports.render import render
from reports.stats import mean_ci, pareto_front
from reports.style import method_styles
from reports.tables import summarize

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
SHARES = {"parameters": 0.25, "buffers": 0.05, "gradients": 0.25, "optimizer": 0.2, "state": 0.05, "activations": 0.15}
TARGET = 0.73  # reached by fedavg at round 4, by heterofl and neulite at round 5 (no ties)
T_1 = 12.706204736174698  # Student's t, 97.5% quantile, 1 degree of freedom


def stage_of(r: int) -> int:
    return (r + 1) // 2  # rounds 1-2: stage 1, 3-4: stage 2, 5: stage 3


def accuracy(label: str, seed: int, r: int) -> float:
    base = METHODS[label][1]
    return base if label == "toolarge" else round(base + 0.1 * r + 0.02 * seed, 6)


def round_time(label: str, seed: int) -> float:
    return METHODS[label][2] * (1 + 0.1 * seed)


def wall_time(label: str, seed: int, r: int) -> float:
    return sum(round_time(label, seed) for _ in range(r))


def need(label: str, seed: int, r: int, device: int) -> int:
    """The task's peak in bytes (estimated = measured)."""
    base = {"fedavg": 5 * MB, "heterofl": BUDGETS[device] * 3 // 4, "neulite": stage_of(r) * MB + MB // 2,
            "toolarge": 100 * MB}[label]
    return base + device * 4096 + seed * 1024


def split(peak: int) -> dict[str, int]:
    parts = {c: int(peak * share) for c, share in SHARES.items()}
    return {"peak": peak, **parts, "other": peak - sum(parts.values())}


def trained_devices(label: str, seed: int, r: int) -> list[int]:
    eligible = [d for d, b in enumerate(BUDGETS) if need(label, seed, r, d) <= b]
    return eligible[:PER_ROUND]


def write_run(folder: Path, label: str, seed: int, rounds: int, config: dict, null_rounds: int = 0) -> None:
    method = METHODS[label][0]
    folder.mkdir(parents=True)
    run = {"label": label, "method": method, "seed": seed}
    manifest = {
        "suite": config["name"], **run, "method_params": {"lr_scale": 1.0}, "config": config,
        "versions": {"python": "3.11", "torch": "2.x"}, "git_commit": None, "started": "2025-01-01T00:00:00",
        "device": "cpu", "data": {"name": "synthetic", "train": 100, "test": 20, "num_classes": 10,
                                  "input_shape": [1, 8, 8]},
        "model": {"name": "cnn", "width": 1.0, "parameters": 1234},
        "fleet": [{"id": d, "budget": b, "speed": 1.0} for d, b in enumerate(BUDGETS)],
        "partition": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with open(folder / "rounds.jsonl", "w") as rounds_file, \
            open(folder / "clients.jsonl", "w") as clients_file:
        for r in range(1, rounds + 1):
            eligible = [d for d, b in enumerate(BUDGETS) if need(label, seed, r, d) <= b]
            trained = trained_devices(label, seed, r)
            stage = {"stage": stage_of(r)} if method == "neulite" else {}
            for d, budget in enumerate(BUDGETS):
                status = "trained" if d in trained else "not_selected" if d in eligible else "excluded"
                row = {"round": r, **run, "device": d, "budget": budget, "speed": 1.0, "status": status,
                       "reason": "over budget" if status == "excluded" else "", "task": "full",
                       **(stage if status != "excluded" else {}),
                       "estimate": split(need(label, seed, r, d))}
                if status == "trained":
                    row |= {"memory": {"tensor": split(need(label, seed, r, d)),
                                       "rss": {"peak": 9 * MB, "start": 8 * MB, "delta": MB}},
                            "over_budget": False, "samples": 10, "steps": 1, "train_loss": 1.0,
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


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def suite(suite_dir):
    return load_suite(suite_dir)


@pytest.fixture(scope="module")
def styles(suite):
    return method_styles(suite.labels)


# ---- statistics ------------------------------------------------------------------------------

def test_mean_ci_uses_student_t():
    mean, half, n = mean_ci([1.0, 3.0])
    assert (mean, n) == (2.0, 2)
    assert half == pytest.approx(T_1 * math.sqrt(2) / math.sqrt(2))
    assert mean_ci([0.5, None, math.nan]) == (0.5, pytest.approx(math.nan, nan_ok=True), 1)
    assert mean_ci([])[2] == 0


def test_pareto_front_keeps_undominated_points():
    memory = [1.0, 2.0, 3.0, 2.5, math.nan]
    accuracy = [0.5, 0.7, 0.9, 0.6, 0.99]
    assert pareto_front(memory, accuracy).tolist() == [True, True, True, False, False]


# ---- rendering -------------------------------------------------------------------------------

def test_render_writes_every_file_and_no_notes_for_complete_records(suite_dir, tmp_path):
    report = render(suite_dir, tmp_path / "out", target=TARGET)
    assert report.notes == []
    for stem in FIGURES:
        for ext in ("png", "svg"):
            assert (tmp_path / "out" / f"{stem}.{ext}").stat().st_size > 1000, stem
    html = (tmp_path / "out" / "index.html").read_text()
    assert all(f'src="{stem}.png"' in html for stem in FIGURES)
    assert "<table" in html and "fedavg" in html
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert all(f"({stem}.png)" in markdown for stem in FIGURES)
    assert "| data.name | synthetic |" in markdown and "abc123" in markdown


def test_accuracy_lines_are_the_mean_over_seeds(suite, styles):
    for build, x_of in ((figures.accuracy_vs_round, lambda label, r: r),
                        (figures.accuracy_vs_time,
                         lambda label, r: mean_over_seeds(wall_time(label, s, r) for s in (0, 1)))):
        ax = build(suite.rounds, styles).axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == ["fedavg", "heterofl", "neulite"]
        for label, line in lines.items():
            assert line.get_xdata() == pytest.approx([x_of(label, r) for r in range(1, 6)])
            assert line.get_ydata() == pytest.approx(
                [mean_over_seeds(accuracy(label, s, r) for s in (0, 1)) for r in range(1, 6)])
            assert line.get_color() == styles[label]["color"]
        assert len(ax.collections) == 3  # one 95% band per label
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        half = T_1 * 0.02 / 2  # two seeds 0.02 apart: sd/sqrt(2) = 0.01
        assert band.max() == pytest.approx(accuracy("fedavg", 0, 5) + 0.01 + half)


def test_memory_by_method_stacks_the_highest_client(suite, styles):
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
    fleet = next(line for line in bx.get_lines() if line.get_gid() == "fleet")
    for share, level in fleet.get_xydata():  # share of devices whose budget is at least the level
        assert share == pytest.approx(np.mean([b / MB >= level for b in BUDGETS]))
    fedavg_peak = (5 * MB + 3 * 4096 + 1024) / MB
    assert any(line.get_ydata()[0] == pytest.approx(fedavg_peak) for line in bx.get_lines())


def test_participation_is_the_share_of_the_fleet(suite, styles):
    eligible_ax, took_part_ax = figures.participation(suite.rounds, styles).axes
    for ax, count in ((eligible_ax, lambda lb, r: sum(need(lb, 0, r, d) <= b for d, b in enumerate(BUDGETS))),
                      (took_part_ax, lambda lb, r: len(trained_devices(lb, 0, r)))):
        for line in ax.get_lines():
            assert line.get_ydata() == pytest.approx([count(line.get_label(), r) / 4 for r in range(1, 6)])
    assert took_part_ax.get_lines()[0].get_ydata() == pytest.approx([0.5] * 5)  # fedavg: devices 2, 3


def test_memory_vs_accuracy_marks_the_pareto_front(suite, styles):
    summary, _ = summarize(suite, TARGET)
    ax = figures.memory_vs_accuracy(summary, styles).axes[0]
    points = {c.get_label(): c.lines[0].get_xydata()[0] for c in ax.containers}
    fedavg_peak = (5 * MB + 3 * 4096 + 1024) / MB
    assert points["fedavg"] == pytest.approx([fedavg_peak, 0.86])
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    neulite_peak = (3 * MB + MB // 2 + 3 * 4096 + 1024) / MB  # stage 3, device 3, seed 1
    assert list(front.get_xdata()) == pytest.approx([neulite_peak, fedavg_peak])  # heterofl is dominated


def test_neulite_stage_figures(suite, styles):
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
    stage_axis = ax.child_axes[0]  # stage numbers along the top, at the middle of each stage's rounds
    assert [t.get_text() for t in stage_axis.get_xticklabels()] == ["1", "2", "3"]
    assert list(stage_axis.get_xticks()) == [1.5, 3.5, 5.0]
    assert stages.neulite_stage_memory(suite.clients[suite.clients["label"] != "neulite"], styles) is None


def test_time_to_target_and_speedup(suite, styles):
    summary, notes = summarize(suite, TARGET)
    assert notes == []
    expected = {label: mean_over_seeds(wall_time(label, s, next(r for r in range(1, 6)
                                                                 if accuracy(label, s, r) >= TARGET))
                                       for s in (0, 1))
                for label in ("fedavg", "heterofl", "neulite")}
    assert expected["fedavg"] == pytest.approx(8.4)  # round 4 at 2.0 s and 2.2 s per round
    ax = figures.time_to_target(summary, styles, TARGET, "fedavg").axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx(list(expected.values()))
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["×1.00 (reference)", f"×{8.4 / 5.25:.2f}", f"×{8.4 / 7.875:.2f}"]


def test_summary_table_matches_hand_computed_values(suite_dir, tmp_path):
    render(suite_dir, tmp_path, target=TARGET)
    rows = table_rows((tmp_path / "summary.md").read_text())
    fedavg = rows["fedavg"]
    half = T_1 * 0.01  # final accuracies 0.85 and 0.87
    assert fedavg["Final accuracy (%)"] == f"86.0 ± {100 * half:.1f}"
    assert fedavg["Best accuracy (%)"] == f"86.0 ± {100 * half:.1f}"
    assert fedavg["Peak memory (MB)"] == f"{(5 * MB + 3 * 4096 + 1024) / MB:.2f}"
    assert fedavg["Participation (%)"] == "50.0"
    assert fedavg["Time to 73% (s)"] == f"8.4 ± {T_1 * 0.4:.1f}"  # 8.0 and 8.8 s
    assert fedavg["Speed-up vs fedavg"] == "×1.00"
    assert fedavg["Bytes up (MB)"] == "8.75"  # devices 2, 3: (3 + 4) / 4 MB a round, 5 rounds
    assert fedavg["Bytes down (MB)"] == "17.50"
    assert rows["heterofl"]["Speed-up vs fedavg"] == "×1.60"  # 8.4 s / 5.25 s
    assert rows["heterofl"]["Participation (%)"] == "75.0"  # 4 eligible, 3 per round
    assert rows["neulite"]["Seeds"] == "2" and rows["neulite"]["Rounds"] == "5"


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
    assert rows["heterofl"]["Seeds"] == "1" and rows["heterofl"]["Final accuracy (%)"] == "75.0"
    assert rows["toolarge"]["Peak memory (MB)"] == "–" and rows["toolarge"]["Participation (%)"] == "0.0"
    assert rows["toolarge"]["Time to 73% (s)"] == "not reached"
    assert rows["neulite"]["Rounds"] == "3–5"
    suite = load_suite(suite_dir)
    ax = figures.accuracy_vs_round(suite.rounds, method_styles(suite.labels)).axes[0]
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
    assert rows["neulite"]["Final accuracy (%)"] == "80.0"  # one seed: no interval


def test_stale_stage_figures_are_removed(tmp_path):
    suite_dir = write_suite(tmp_path, labels=("fedavg", "neulite"), seeds=(0,), rounds=2)
    render(suite_dir, tmp_path / "out")
    assert (tmp_path / "out" / "neulite_stage_memory.png").exists()
    shutil.rmtree(suite_dir / "neulite-seed0")
    report = render(suite_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "neulite_stage_memory.png").exists()
    assert "neulite_stage_memory: nothing to plot yet; not rendered" in report.notes


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="holds no run records"):
        load_suite(tmp_path)


# ---- command line ----------------------------------------------------------------------------

def test_cli_main(suite_dir, tmp_path, capsys):
    assert main([str(suite_dir), "-o", str(tmp_path / "out"), "--target", "0.73"]) == 0
    assert f"open {tmp_path / 'out' / 'index.html'}" in capsys.readouterr().out
    assert "Time to 73% (s)" in (tmp_path / "out" / "summary.md").read_text()
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a folder of suite records" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(suite_dir), "--target", "90"])


def test_python_m_reports_imports_no_training_code(suite_dir, tmp_path):
    out = tmp_path / "via-m"
    done = subprocess.run([sys.executable, "-m", "reports", str(suite_dir), "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").exists() and (out / "accuracy_vs_round.svg").exists()
    probe = ("import sys, reports.cli; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'harness', 'neulite', 'baselines'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


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
