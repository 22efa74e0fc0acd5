"""``python -m harness``: list, memory, and the end-of-run summary table."""

import json
import os
import re

import pytest
from conftest import tiny_suite

from harness.cli import build_parser, main, measure_rows
from harness.data import load_data, partition
from harness.engine import run_suite
from harness.fleet import MB, build_fleet
from harness.suites import load_suite
from harness.summary import format_table, summary_table


def test_list_names_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("fedavg", "exclusive", "allsmall", "resnet18", "vgg16", "digits", "cifar10", "dirichlet", "trace"):
        assert word in out


def test_memory_table_by_category(capsys):
    assert main(["memory", "cnn", "--input", "1,8,8", "--batch", "32"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| full model"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3.61" and cells[-1] == "+0.0%"  # 3,785,372 bytes, see tests/test_memory.py
    assert abs(sum(float(c) for c in cells[2:9]) - 3.61) <= 0.03


def test_memory_rejects_bad_arguments(capsys):
    assert main(["memory", "resnet50"]) == 2
    assert "unknown model 'resnet50'" in capsys.readouterr().err
    assert main(["memory", "cnn", "--input", "8x8"]) == 2
    assert "C,H,W" in capsys.readouterr().err


def test_summary_table_values(tmp_path, quiet):
    """The table a run prints is the report's: the headline over each seed's last tenth of rounds
    (here the last of 2) with the two seeds' range, the last round, the change from round 1, and
    FedAvg marked over budget; a label still moving is named in a note."""
    cfg = tiny_suite(seeds=[0, 1], rounds=2)
    folder = run_suite(cfg, tmp_path, log=quiet)
    table, notes = summary_table(folder)
    rounds = [[json.loads(x) for x in (folder / f"fedavg-seed{s}" / "rounds.jsonl").read_text().splitlines()]
              for s in (0, 1)]
    last = [seed[-1]["accuracy"] for seed in rounds]
    change = sum(seed[1]["accuracy"] - seed[0]["accuracy"] for seed in rounds) / 2
    peak = max(r["peak_tensor"] for seed in rounds for r in seed if r["peak_tensor"] is not None)
    accuracy = f"{50 * sum(last):.1f} ({100 * min(last):.1f}–{100 * max(last):.1f})"  # two seeds: their range
    assert table.to_dict("records") == [{
        "Label": "fedavg (over budget)", "Accuracy, last 10% of rounds (%)": accuracy, "Against the best": "n/a",
        "Last round (%)": accuracy, "Change over the last 20% (points)": f"{100 * change:+.1f}",
        "Peak measured (MB)": f"{peak / 2**20:.2f}", "Participation (%)": "66.7", "Seeds": "2 (min–max range)"}]
    assert notes == ([] if abs(change) <= 0.015 else [
        "not at a plateau (moved more than 1.5 points over the last 20% of their evaluated rounds; more rounds "
        "would change their accuracy): fedavg"])
    printed = format_table(table, notes)
    assert printed.splitlines()[2].startswith("| fedavg (over budget) |")
    assert quiet[-1] == "\n" + printed  # what the run printed last


def test_summary_headline_is_over_the_evaluated_rounds(tmp_path, quiet):
    folder = run_suite(tiny_suite(rounds=2), tmp_path, log=quiet)
    path = folder / "fedavg-seed0" / "rounds.jsonl"
    rounds = [json.loads(x) for x in path.read_text().splitlines()]
    rounds[-1]["accuracy"] = None  # a run stopped after a round that eval_every skipped
    path.write_text("".join(json.dumps(r) + "\n" for r in rounds))
    row = summary_table(folder)[0].iloc[0]
    assert row["Accuracy, last 10% of rounds (%)"] == row["Last round (%)"] == f"{100 * rounds[0]['accuracy']:.1f}"
    assert row["Change over the last 20% (points)"] == "–"  # one evaluated round: nothing to compare


def test_memory_measure_compares_estimate_tracker_and_rss(capsys):
    assert main(["memory", "cnn", "--input", "1,8,8", "--batch", "16", "--measure"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| full model") and line.count("|") == 6)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == cells[2]  # estimate == tracker
    if cells[3] != "absent":  # two independent views of the process RSS agree
        assert abs(float(cells[3]) - float(cells[4])) <= 2.0


def table_peaks(out: str) -> dict[str, float]:
    """The estimate table's peak column by task label."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.split("\n\n")[0].splitlines()
             if line.startswith("| ") and not line.startswith("| task")]
    return {row[0]: float(row[1]) for row in cells}


def test_memory_measures_each_row_in_a_fresh_process():
    """A row must not pay another's interpreter warm-up nor reuse its freed heap."""
    args = build_parser().parse_args(["memory", "cnn", "--input", "1,8,8", "--batch", "8", "--method", "allsmall"])
    rows = list(measure_rows(args, [0, 1]))
    pids = {row["pid"] for row in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(row["rss"] >= row["tensor"] > 0 for row in rows if "rss" in row)


def test_memory_of_a_suite_takes_its_data_batch_and_method_params(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nbatch_size = 16\ndevice = "cpu"\n'
                     '[data]\nname = "synthetic"\nsynthetic_samples = 400\npartition = "iid"\n'
                     '[model]\nname = "cnn"\n'
                     '[[methods]]\nmethod = "neulite"\n'
                     '[[methods]]\nmethod = "neulite"\nlabel = "no-head"\nlambda2 = [0.0]\n')
    assert main(["memory", "--suite", str(suite)]) == 0
    peaks = table_peaks(capsys.readouterr().out)
    assert main(["memory", "cnn", "--input", "1,8,8", "--batch", "16", "--method", "neulite"]) == 0
    defaults = table_peaks(capsys.readouterr().out)
    assert peaks["full model (FedAvg)"] == defaults["full model (FedAvg)"] == 2.26
    assert [peaks[f"neulite: stage={s}"] for s in (1, 2, 3)] == [defaults[f"stage={s}"] for s in (1, 2, 3)]
    assert peaks["no-head: stage=2"] < peaks["neulite: stage=2"]  # no projection head: less to hold
    assert main(["memory", "--suite", str(suite), "--set", "batch_size=32"]) == 0
    assert table_peaks(capsys.readouterr().out)["full model (FedAvg)"] == 3.61


def test_memory_puts_several_methods_in_one_table(capsys):
    assert main(["memory", "cnn", "--input", "1,8,8", "--method", "microbatch,neulite"]) == 0
    peaks = table_peaks(capsys.readouterr().out)
    assert "microbatch: full mb=8" in peaks and "neulite: stage=3" in peaks
    assert peaks["microbatch: full"] == peaks["full model (FedAvg)"] > peaks["microbatch: full mb=1"]


def test_the_default_suite_shows_neulites_point(capsys):
    """suites/quick.toml is the default because NeuLite, every part on, saves memory there: its
    costliest stage is at most 60% of full-model training, which fits at most a third of the fleet
    for each seed; every client holds a full batch, so clients of a task share one estimate."""
    cfg = load_suite("suites/quick.toml")
    neulite = [entry for entry in cfg.methods if entry.method == "neulite"]
    assert neulite and not neulite[0].params  # the method's defaults: mentor and harmonizer on
    assert main(["memory", "--suite", "suites/quick.toml", "--set", 'methods=[{method="neulite"}]']) == 0
    peaks = table_peaks(capsys.readouterr().out)
    full, stages = peaks.pop("full model (FedAvg)"), list(peaks.values())
    assert list(peaks) == [f"neulite: stage={t}" for t in (1, 2, 3, 4)]
    assert max(stages) <= 0.60 * full
    data = load_data(cfg.data)
    for seed in cfg.seeds:
        fitting = sum(device.budget >= full * MB for device in build_fleet(cfg.fleet, seed))
        assert fitting <= cfg.fleet.devices / 3, seed
        sizes = [len(part) for part in partition(data.train_y, cfg.fleet.devices, cfg.data, seed)]
        assert max(sizes) <= cfg.batch_size and len(set(sizes)) <= 2, seed


@pytest.mark.slow
def test_the_cifar10_suite_in_its_smallest_form(cifar_root, tmp_path, capsys):
    """suites/cifar10-cpu.toml as the docs run it (every method, on Ray), for one round and seed:
    every run records its round, full-model training fits a minority of the fleet and NeuLite's
    costliest stage is its measured share of it."""
    ray = pytest.importorskip("ray", reason="the CIFAR-10 suite runs on Ray: pip install -e '.[ray]'")
    suite = ["suites/cifar10-cpu.toml", "--set", f"data.root={cifar_root}", "--set", "seeds=[0]"]
    assert main(["memory", "--suite", *suite]) == 0
    peaks = table_peaks(capsys.readouterr().out)
    full, stages = peaks["full model (FedAvg)"], [v for k, v in peaks.items() if k.startswith("neulite: stage")]
    assert len(stages) == 4 and max(stages) <= 0.70 * full
    cfg = load_suite(suite[0], [s for s in suite[1:] if s != "--set"])
    assert sum(d.budget >= full * MB for d in build_fleet(cfg.fleet, 0)) < cfg.fleet.devices / 2
    try:
        assert main(["run", *suite, "--set", "rounds=1", "--out", str(tmp_path)]) == 0
    finally:
        ray.shutdown()  # the Ray this test started, so that later tests start their own
    folder = tmp_path / "cifar10-cpu"
    for entry in cfg.methods:
        rounds = [json.loads(line) for line in (folder / f"{entry.label}-seed0" / "rounds.jsonl").open()]
        assert [r["round"] for r in rounds] == [1] and rounds[0]["participated"] >= 1, entry.label


def test_memory_takes_a_model_or_a_suite(capsys):
    for neither_or_both in ([], ["cnn", "--suite", "suites/quick.toml"]):
        assert main(["memory", *neither_or_both]) == 2
        assert "give one of a model (e.g. resnet18) and --suite FILE" in capsys.readouterr().err
    assert main(["memory", "cnn", "--set", "rounds=1"]) == 2
    assert "--suite only" in capsys.readouterr().err


def test_overhead_runs_the_same_workload_both_ways(capsys):
    """The bare loop is the harness's FedAvg without the harness: the same final model."""
    from harness.overhead import Timing, compare

    cfg = tiny_suite(rounds=2)
    timing = compare(cfg, repeats=2)
    assert timing.harness_accuracy == timing.bare_accuracy and timing.harness_s > 0 and timing.bare_s > 0
    assert len(timing.pairs) == 2 and timing.harness_s == min(h for h, _ in timing.pairs)
    assert len(timing.pair_ratios) == 2
    assert Timing(3.0, 2.0, 0.5, 0.5, pairs=[(3.0, 2.0), (5.0, 4.0)]).pair_ratios == [1.5, 1.25]  # harness / bare
    parts = {part: (seconds, calls) for part, seconds, calls in timing.parts}  # every part, each counted once
    clients = cfg.rounds * cfg.clients_per_round
    # 53-54 samples at batch 16, one task shape: the run's first client is measured in its first
    # full step; the others train untracked (16, 16 and the short one)
    assert parts["clients: building each task under the tracker"][1] == 1
    assert parts["clients: measured steps"][1] == 1
    assert parts["clients: untracked steps"][1] == 4 * clients - 1
    assert parts["rounds: planning, aggregation, round records"][1] == cfg.rounds
    assert all(seconds >= 0 for seconds, _ in parts.values())
    assert main(["overhead", "suites/quick.toml", "--set", "rounds=1", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| harness", "| bare"))]
    assert len(rows) == 2 and rows[0].split("|")[3] == rows[1].split("|")[3]  # same accuracy
    assert "harness / bare:" in out and "| clients: measured steps " in out
    by_run = re.search(r"^run by run: (\d+\.\d\d)x (\d+\.\d\d)x \(.* median of the others (\d+\.\d\d)x\)$", out, re.M)
    assert by_run and by_run[3] == by_run[2]  # the first pair (one-off imports) left out


def test_memory_tables_align_each_task_across_batches(tmp_path):
    from harness.tables import peak_table, write_into

    table = peak_table("cnn", [16, 32])
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in table.splitlines()[2:]}
    assert "| - | - |" in rows["microbatch", "full mb=16"]  # batch 16 has no micro-batch of 16
    assert rows["fedavg", "full"].endswith("| 100.0% | 47.11 | 100.0% |")
    stage1 = [c.strip() for c in rows["neulite", "stage=1"].strip("|").split("|")]
    assert float(stage1[2]) < float(stage1[4])  # the same stage at the larger batch needs more
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\nbefore\n")
    write_into(doc, "one")
    write_into(doc, "two")
    assert doc.read_text() == "# B\n\nbefore\n\n<!-- memory-tables:start -->\ntwo\n<!-- memory-tables:end -->\n"
