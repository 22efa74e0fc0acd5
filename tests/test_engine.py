"""The round loop end to end: records, the memory gate, determinism, resume, bad runs."""

import dataclasses
import io
import json
import typing

import pandas as pd
import pytest
import torch
from conftest import Lines, start, tiny_suite, write_toml

import harness.methods as methods_module
from harness.config import ConfigError, OptimizerConfig
from harness.data import load_data
from harness.engine import Run, run_suite, suite_estimator
from harness.fleet import MB, Device
from harness.methods import TaskSpec, over_budget
from harness.planning import plan_round
from harness.records import CHECKPOINT, RecordsError, read_jsonl
from harness.resume import RunExistsError
from harness.seeds import seed_torch
from harness.training import LR_SCHEDULES, NonFiniteLossError, round_optimizer

from helpers import context, method, records, without_times


def test_records_of_a_run(tmp_path, quiet):
    cfg = tiny_suite(methods=[{"method": "exclusive"}], fleet={"low_mb": 0.1, "high_mb": 0.6},
                     measure={"clients": "all"})
    folder = run_suite(cfg, tmp_path, log=quiet)
    assert folder == tmp_path / "tiny"
    suite = json.loads((folder / "suite.json").read_text())
    assert suite["runs"] == [{"label": "exclusive", "method": "exclusive", "seed": 0, "dir": "exclusive-seed0"}]
    run = folder / "exclusive-seed0"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["name"] == "synthetic" and len(manifest["fleet"]) == 6
    assert sum(p["samples"] for p in manifest["partition"]) == manifest["data"]["train"]
    assert set(manifest["versions"]) == {"python", "torch", "torchvision", "harness"}
    rounds, clients = records(run)
    assert [r["round"] for r in rounds] == [1, 2, 3] and len(clients) == 3 * 6
    need = {c["estimate"]["peak"] for c in clients if c["estimate"]}
    assert len(need) == 1
    need = need.pop()
    assert {c["status"] for c in clients} == {"trained", "excluded", "not_selected"}
    for c in clients:
        assert (c["status"] == "excluded") == (c["budget"] < need)
        if c["status"] == "excluded":
            assert c["reason"].startswith("budget ") and "estimated for full" in c["reason"]
        if c["status"] == "trained":
            assert c["memory"]["tensor"]["peak"] == c["estimate"]["peak"] <= c["budget"]
            assert not c["over_budget"] and c["bytes_up"] > 0 and c["samples"] > 0
            assert "cuda" not in c["memory"] and "nvml" not in c["memory"]
    for r in rounds:
        trained = [c for c in clients if c["round"] == r["round"] and c["status"] == "trained"]
        assert r["participated"] == len(trained) == min(4, r["eligible"])
        assert r["eligible"] + r["excluded"] == 6
        assert r["peak_tensor"] == max(c["memory"]["tensor"]["peak"] for c in trained)
        assert r["bytes_up"] == sum(c["bytes_up"] for c in trained)
        assert 0 <= r["accuracy"] <= 1 and r["evals"]["global"]["accuracy"] == r["accuracy"]
    assert rounds[-1]["wall_time"] == pytest.approx(sum(r["round_time"] for r in rounds))
    # per-round lines go to the run's log, the console gets them only when verbose
    assert "[exclusive seed 0] round 3/3" in (run / "run.log").read_text()
    assert not any(line.startswith("[exclusive seed 0] round") for line in quiet)


def test_same_seed_twice_gives_identical_records_and_weights(tmp_path, quiet):
    cfg = tiny_suite(methods=[{"method": "fedavg"}, {"method": "allsmall"}], data={"partition": "dirichlet"})
    a, b = run_suite(cfg, tmp_path / "a", log=quiet), run_suite(cfg, tmp_path / "b", log=quiet)
    for run in ("fedavg-seed0", "allsmall-seed0"):
        for ra, rb in zip(records(a / run), records(b / run)):
            assert without_times(ra) == without_times(rb)
        wa = torch.load(a / run / CHECKPOINT)["method"]["model"]
        wb = torch.load(b / run / CHECKPOINT)["method"]["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_shapes_measures_each_task_shape_once_and_trains_the_same(tmp_path, quiet):
    """``measure.clients = "shapes"`` (the default) tracks the first client of each task shape in
    a run and records the others with their task's estimate; training is the same to the bit as
    with every client measured. HeteroFL gives the fleet several widths, each measured once."""
    methods = [{"method": "heterofl"}, {"method": "fjord"}]
    fleet = {"low_mb": 0.1, "high_mb": 0.6}
    shapes = run_suite(tiny_suite(methods=methods, fleet=fleet, rounds=4), tmp_path / "s", log=quiet)
    every = run_suite(tiny_suite(methods=methods, fleet=fleet, rounds=4, measure={"clients": "all"}),
                      tmp_path / "a", log=quiet)
    for run in ("heterofl-seed0", "fjord-seed0"):
        (rounds, clients), (all_rounds, all_clients) = records(shapes / run), records(every / run)
        assert [r["accuracy"] for r in rounds] == [r["accuracy"] for r in all_rounds]
        trained = [c for c in clients if c["status"] == "trained"]
        assert [c["train_loss"] for c in trained] == [c["train_loss"] for c in all_clients if c["status"] == "trained"]
        assert all(c["measured"] and c["memory"] for c in all_clients if c["status"] == "trained")
        first: dict[str, int] = {}
        for i, c in enumerate(trained):
            first.setdefault(c["task"], i)  # one shape per task: every client holds a full batch
        assert [i for i, c in enumerate(trained) if c["measured"]] == sorted(first.values())
        assert len(first) > 1 and len(trained) > len(first)
        for c in trained:
            if c["measured"]:
                assert c["memory"]["tensor"]["peak"] <= c["estimate"]["peak"]
            else:
                assert c["memory"] is None and c["over_budget"] is (c["estimate"]["peak"] > c["budget"])
        for r in rounds:
            peaks = [c["memory"]["tensor"]["peak"] for c in trained if c["round"] == r["round"] and c["measured"]]
            assert r["peak_tensor"] == max(peaks, default=None)


def test_a_resumed_run_measures_the_shapes_the_uninterrupted_one_does(tmp_path, quiet):
    """The shapes measured so far are in the checkpoint: a run stopped after round 1 and resumed
    records what one run would. Which clients are measured may change on resume."""
    methods = [{"method": "heterofl"}]
    fleet = {"low_mb": 0.1, "high_mb": 0.6}
    whole = run_suite(tiny_suite(methods=methods, fleet=fleet), tmp_path / "whole", log=quiet)
    run_suite(tiny_suite(methods=methods, fleet=fleet, rounds=1), tmp_path / "cut", log=quiet)
    cut = run_suite(tiny_suite(methods=methods, fleet=fleet), tmp_path / "cut", resume=True, log=quiet)
    for got, want in zip(records(cut / "heterofl-seed0"), records(whole / "heterofl-seed0")):
        assert without_times(got) == without_times(want)
    run_suite(tiny_suite(methods=methods, fleet=fleet, rounds=4, measure={"clients": "all"}), tmp_path / "cut",
              resume=True, log=quiet)
    _, clients = records(cut / "heterofl-seed0")
    assert all(c["measured"] for c in clients if c["status"] == "trained" and c["round"] == 4)


def test_a_suite_says_its_progress_without_escape_codes_and_rounds_only_when_verbose(tmp_path, quiet):
    """Not on a terminal: one plain line per run with runs done, seconds and time left, no bar and
    no escape codes; per-round lines with ``verbose`` only, and always in each run's run.log."""
    cfg = tiny_suite(methods=[{"method": "fedavg"}, {"method": "allsmall"}], rounds=2)
    run_suite(cfg, tmp_path / "a", log=quiet)
    ends = [line for line in quiet if "finished" in line]
    assert [line.split(" (")[0] for line in ends] == ["[fedavg-seed0] finished", "[allsmall-seed0] finished"]
    assert "(1/2 runs, " in ends[0] and "min left)" in ends[0] and ends[1].endswith(" s)") and "(2/2 runs" in ends[1]
    assert not any("\x1b[" in line or " round 1/2 " in line for line in quiet)
    verbose = Lines()
    run_suite(cfg, tmp_path / "b", log=verbose, verbose=True)
    assert sum(" round " in line and "/2  acc" in line for line in verbose) == 4
    assert (tmp_path / "b" / "tiny" / "allsmall-seed0" / "run.log").read_text().count("/2  acc") == 2


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a user's console does."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_suite_draws_one_bar_of_rounds(tmp_path):
    """A terminal gets a tqdm bar over every run's rounds (read from their records), with runs done."""
    from harness.progress import SuiteProgress

    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, lines in zip(folders, (3, 1), strict=True):
        folder.mkdir()
        (folder / "rounds.jsonl").write_text("{}\n" * lines)
    screen = Terminal()
    progress = SuiteProgress(folders, 3, lambda line: None, stream=screen)
    assert progress.done_rounds() == 4 and not progress.bar.disable
    progress.run_done("[a] finished")
    progress.close()
    shown = screen.getvalue()
    assert "suite:" in shown and "4/6" in shown and "1/2 runs" in shown and "[a] finished (1/2 runs" in shown
    no_bar = SuiteProgress(folders, 3, lambda line: None, bar=False, stream=screen)
    assert no_bar.bar.disable
    no_bar.close()


def test_tables_printed_in_the_terminal_are_aligned_markdown():
    from harness.markdown import markdown_table

    text = markdown_table(["task", "peak MB"], [["full model (FedAvg)", "7.52"], ["neulite: stage=1", "3.24"]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line as wide: the columns line up
    assert lines[0] == "| task                | peak MB |" and lines[1] == "|---------------------|---------|"
    assert lines[3] == "| neulite: stage=1    | 3.24    |"


def test_the_bar_counts_complete_round_lines_as_they_are_appended(tmp_path):
    from harness.progress import RoundCounter

    count = RoundCounter(tmp_path)
    assert count() == 0  # no records yet
    (tmp_path / "rounds.jsonl").write_text('{}\n{}\n{"round"')
    assert count() == 2  # a line still being written is not a round yet
    with (tmp_path / "rounds.jsonl").open("a") as f:
        f.write(': 3}\n{}\n')
    assert count() == 4
    (tmp_path / "rounds.jsonl").write_text("{}\n")  # rewritten shorter (a resume dropped a torn round)
    assert count() == 1


def test_a_long_command_counts_its_steps():
    """``memory``, ``tables`` and ``overhead`` go through ``counted``: a bar on a terminal, one plain
    line elsewhere; every item comes through either way."""
    from harness.progress import counted

    plain, screen = io.StringIO(), Terminal()
    assert list(counted(["a", "b", "c"], "tasks", stream=plain)) == ["a", "b", "c"]
    assert plain.getvalue() == "tasks: 3 to do\n"
    assert list(counted(range(4), "models", stream=screen)) == [0, 1, 2, 3]
    assert "models:" in screen.getvalue() and "0/4" in screen.getvalue()  # drawn, then cleared (leave=False)


def test_a_budget_no_device_meets_records_everyone_excluded(tmp_path, quiet):
    cfg = tiny_suite(methods=[{"method": "exclusive"}, {"method": "allsmall"}],
                     fleet={"low_mb": 0.001, "high_mb": 0.002})
    folder = run_suite(cfg, tmp_path, log=quiet)
    for run in ("exclusive-seed0", "allsmall-seed0"):
        rounds, clients = records(folder / run)
        assert all(r["eligible"] == 0 and r["participated"] == 0 and r["peak_tensor"] is None for r in rounds)
        assert all(c["status"] == "excluded" and c["reason"] for c in clients)
    assert any("no device's budget fits" in line for line in quiet)
    _, clients = records(folder / "allsmall-seed0")
    assert clients[0]["reason"].startswith("no width fits the weakest device")


def test_plain_fedavg_ignores_budgets_but_records_overruns(tmp_path, quiet):
    cfg = tiny_suite(fleet={"low_mb": 0.001, "high_mb": 0.002}, rounds=1)
    rounds, clients = records(run_suite(cfg, tmp_path, log=quiet) / "fedavg-seed0")
    trained = [c for c in clients if c["status"] == "trained"]
    assert len(trained) == 4 and all(c["over_budget"] for c in trained)
    # eligible means one thing for every method: the devices whose task fits (none here); FedAvg
    # offers its task to every device regardless
    assert [(r["eligible"], r["offered"], r["excluded"]) for r in rounds] == [(0, 6, 0)]
    assert "(eligible 0, offered 6)" in (tmp_path / "tiny" / "fedavg-seed0" / "run.log").read_text()
    fitting = tiny_suite(fleet={"low_mb": 0.1, "high_mb": 0.6}, rounds=1, name="fits")
    first = records(run_suite(fitting, tmp_path, log=quiet) / "fedavg-seed0")[0][0]
    need = {c["estimate"]["peak"] for c in records(tmp_path / "fits" / "fedavg-seed0")[1]}.pop()
    budgets = [c["budget"] for c in records(tmp_path / "fits" / "fedavg-seed0")[1]]
    assert first["eligible"] == sum(b >= need for b in budgets) < first["offered"] == 6


def test_uniform_selection_samples_from_all_devices(tmp_path, quiet):
    """Sampling over the whole fleet: a sampled device that cannot fit still does not train."""
    cfg = tiny_suite(methods=[{"method": "exclusive"}], selection="uniform", rounds=6,
                     fleet={"low_mb": 0.1, "high_mb": 0.6})
    rounds, clients = records(run_suite(cfg, tmp_path, log=quiet) / "exclusive-seed0")
    assert all(r["selected"] == 4 and r["participated"] <= 4 for r in rounds)
    assert any(r["participated"] < min(4, r["eligible"]) for r in rounds)  # "eligible" would fill up
    assert all(c["status"] != "trained" or (c["estimate"]["peak"] <= c["budget"] and not c["over_budget"])
               for c in clients)


def test_eligible_selection_fills_up_from_the_eligible(tmp_path, quiet):
    cfg = tiny_suite(methods=[{"method": "exclusive"}], rounds=6, fleet={"low_mb": 0.1, "high_mb": 0.6})
    rounds, _ = records(run_suite(cfg, tmp_path, log=quiet) / "exclusive-seed0")
    assert all(r["selected"] == r["participated"] == min(4, r["eligible"]) for r in rounds)


def test_existing_records_need_resume(tmp_path, quiet):
    cfg = tiny_suite(rounds=1)
    run_suite(cfg, tmp_path, log=quiet)
    with pytest.raises(RunExistsError, match="--resume"):
        run_suite(cfg, tmp_path, log=quiet)
    run_suite(cfg, tmp_path, resume=True, log=quiet)  # already complete: nothing to do
    assert len(read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")) == 1


def test_crash_inside_the_first_round_resumes_cleanly(tmp_path, quiet):
    """Clients' lines written, then a crash before the round's line and checkpoint: resume redoes
    round 1 without doubling its client lines."""
    cfg = tiny_suite(rounds=2)
    run_suite(cfg, tmp_path / "ref", log=quiet)
    folder = run_suite(tiny_suite(rounds=1), tmp_path / "crash", log=quiet) / "fedavg-seed0"
    (folder / "rounds.jsonl").unlink()
    (folder / CHECKPOINT).unlink()
    with pytest.raises(RunExistsError):
        run_suite(cfg, tmp_path / "crash", log=quiet)
    run_suite(cfg, tmp_path / "crash", resume=True, log=quiet)
    for got, want in zip(records(folder), records(tmp_path / "ref" / "tiny" / "fedavg-seed0")):
        assert without_times(got) == without_times(want)


def test_resume_refuses_a_changed_config(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    with pytest.raises(ConfigError, match=r"another config \(batch_size, data\)"):
        run_suite(tiny_suite(batch_size=8, data={"alpha": 0.1}), tmp_path, resume=True, log=quiet)
    with pytest.raises(ConfigError, match=r"another method params \(weighted\)"):
        run_suite(tiny_suite(methods=[{"method": "fedavg", "weighted": False}]), tmp_path, resume=True, log=quiet)
    # more rounds (or more seeds and methods beside it) continue the same run
    run_suite(tiny_suite(rounds=2, seeds=[0, 1]), tmp_path, resume=True, log=quiet)
    assert len(read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")) == 2


def test_a_cosine_schedule_lowers_each_rounds_lr_from_the_first(tmp_path, quiet):
    """Round 1 trains at the suite's lr under either schedule, so its records are the same; later
    rounds differ; the factors are the cosine's, falling to near 0 in the last round."""
    const = records(run_suite(tiny_suite(rounds=2), tmp_path / "c", log=quiet) / "fedavg-seed0")
    cosine = records(run_suite(tiny_suite(rounds=2, optimizer={"schedule": "cosine"}), tmp_path / "k", log=quiet)
                     / "fedavg-seed0")
    first = [without_times([r for r in rows if r["round"] == 1]) for rows in (*const, *cosine)]
    assert first[:2] == first[2:]
    assert const[0][1]["accuracy"] != cosine[0][1]["accuracy"] or const[0][1]["loss"] != cosine[0][1]["loss"]
    cfg = OptimizerConfig(lr=0.1, schedule="cosine")
    assert [round(round_optimizer(cfg, r, 4).lr, 6) for r in (1, 2, 3, 4)] == [0.1, 0.085355, 0.05, 0.014645]
    assert round_optimizer(OptimizerConfig(lr=0.1), 4, 4).lr == 0.1
    assert set(LR_SCHEDULES) == set(typing.get_args(typing.get_type_hints(OptimizerConfig)["schedule"]))


def test_a_scheduled_run_resumes_only_with_the_rounds_its_schedule_spans(tmp_path, quiet):
    cfg = tiny_suite(rounds=1, optimizer={"schedule": "cosine"})
    run_suite(cfg, tmp_path, log=quiet)
    with pytest.raises(ConfigError, match=r"cosine schedule over the rounds it was started with \(1\)"):
        run_suite(tiny_suite(rounds=2, optimizer={"schedule": "cosine"}), tmp_path, resume=True, log=quiet)
    run_suite(cfg, tmp_path, resume=True, log=quiet)


def test_records_of_an_earlier_version_resume_with_its_new_keys_at_their_defaults(tmp_path, quiet):
    """A key added to the schema later (here the lr schedule) is absent from older manifests; at the
    value that does what those versions did, their runs resume; another value is refused, and so is
    a key added later that is not listed as such (records without the deadline cannot resume)."""
    folder = run_suite(tiny_suite(rounds=1), tmp_path, log=quiet) / "fedavg-seed0"
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["config"]["optimizer"]["schedule"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"another config \(optimizer\)"):
        run_suite(tiny_suite(rounds=2, optimizer={"schedule": "cosine"}), tmp_path, resume=True, log=quiet)
    run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert len(read_jsonl(folder / "rounds.jsonl")) == 2
    del manifest["config"]["deadline_s"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"another config \(deadline_s\)"):
        run_suite(tiny_suite(rounds=3), tmp_path, resume=True, log=quiet)


def test_nan_loss_stops_with_a_clear_message_and_keeps_records(tmp_path, quiet, monkeypatch):
    import harness.training as training

    calls = {"n": 0}
    real_step = training.training_step

    def poisoned(task, optimizer, x, y, tracker=None):
        calls["n"] += 1
        loss = real_step(task, optimizer, x, y, tracker)
        return loss * float("nan") if calls["n"] > 40 else loss

    monkeypatch.setattr(training, "training_step", poisoned)
    cfg = tiny_suite(rounds=5)
    with pytest.raises(NonFiniteLossError, match=r"round \d, device \d: the training loss became nan"):
        run_suite(cfg, tmp_path, log=quiet)
    rounds = read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")
    assert 1 <= len(rounds) < 5 and [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))


def test_bad_input_from_the_command_line(tmp_path):
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=1)
    text = suite.read_text()
    suite.write_text(text.replace('method = "exclusive"', 'method = "fedproxx"'))
    proc = start([str(suite)], tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.count("\n") == 1 and "unknown method 'fedproxx'" in err
    suite.write_text(text.replace('name = "synthetic"', 'name = "cifar10"\nroot = "nowhere"'))
    proc = start([str(suite)], tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "cifar10 not found under nowhere" in err and "Traceback" not in err
    suite.write_text(text.replace("low_mb = 0.2", "low_mb = -1"))
    proc = start([str(suite)], tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "low_mb" in err


@pytest.mark.slow
def test_real_cifar10_end_to_end(cifar_root, tmp_path, quiet):
    """The CIFAR-10 (JPEG) copy through the whole engine: augmentation, ResNet-18, NeuLite stages."""
    cfg = tiny_suite(
        name="cifar", rounds=2, clients_per_round=2, batch_size=32, optimizer={"lr": 0.01},  # as the release
        data={"name": "imagefolder", "root": str(cifar_root), "partition": "dirichlet", "alpha": 0.5,
              "augment": True},
        model={"name": "resnet18", "width": 0.25},
        fleet={"devices": 50, "distribution": "uniform", "low_mb": 30.0, "high_mb": 80.0},
        methods=[{"method": "exclusive"}, {"method": "neulite"}])
    folder = run_suite(cfg, tmp_path, log=quiet)
    for run in ("exclusive-seed0", "neulite-seed0"):
        rounds, clients = records(folder / run)
        assert [r["round"] for r in rounds] == [1, 2]
        trained = [c for c in clients if c["status"] == "trained"]
        assert trained and all(c["estimate"]["peak"] <= c["budget"] for c in trained)
        assert all(c["memory"]["tensor"]["peak"] <= c["estimate"]["peak"] for c in trained if c["measured"])
    neulite_rounds, _ = records(folder / "neulite-seed0")
    assert [r["stage"] for r in neulite_rounds] == [1, 2]
    assert 0.1 <= neulite_rounds[-1]["evals"]["stage"]["accuracy"] <= 1


def test_evaluation_mixes_the_classes_of_a_data_set_stored_class_by_class(tmp_path, quiet):
    """An image folder decodes class by class. FedRolex evaluates with each test batch's statistics
    and HeteroFL calibrates with the training batches': one-class batches would score FedRolex near
    chance on CIFAR-10 (15% against HeteroFL's 40%, before this order), so both passes mix classes."""
    cfg = tiny_suite(eval_batch_size=16, methods=[{"method": "heterofl"}])
    data = load_data(cfg.data)
    test, train = torch.argsort(data.test_y, stable=True), torch.argsort(data.train_y, stable=True)
    by_class = dataclasses.replace(data, test_x=data.test_x[test], test_y=data.test_y[test],
                                   train_x=data.train_x[train], train_y=data.train_y[train])
    device = torch.device("cpu")
    run = Run(cfg, cfg.methods[0], 0, by_class, device, tmp_path / "r", quiet, suite_estimator(cfg, by_class, device))
    for batches in (run.test, run.calibration):
        labels = [len(y.unique()) for _, y in batches]
        assert len(labels) >= 5 and min(labels) >= 5, labels  # class-sorted batches of 16 hold 1-2 classes
    assert sorted(torch.cat([y for _, y in run.test]).tolist()) == sorted(data.test_y.tolist())  # each once


def test_eval_every_skips_evaluation_but_not_training(tmp_path, quiet):
    """``eval_every = 2``: rounds 2 and 4 and the last (5) are evaluated, the others record null
    accuracy; training is untouched (HeteroFL's calibration pass included), so the evaluated rounds
    match a run that evaluates every round."""
    every = {"rounds": 5, "methods": [{"method": "heterofl"}], "fleet": {"low_mb": 0.1, "high_mb": 0.6}}
    dense = run_suite(tiny_suite(**every), tmp_path / "dense", log=quiet)
    sparse = run_suite(tiny_suite(eval_every=2, **every), tmp_path / "sparse", log=quiet)
    dense_rounds, _ = records(dense / "heterofl-seed0")
    sparse_rounds, _ = records(sparse / "heterofl-seed0")
    assert [r["accuracy"] is not None for r in sparse_rounds] == [False, True, False, True, True]
    for d, s in zip(dense_rounds, sparse_rounds):
        if s["accuracy"] is not None:
            assert (s["accuracy"], s["loss"]) == (d["accuracy"], d["loss"])
        else:
            assert s["evals"] == {"global": {"accuracy": None, "loss": None}}
    resumed = {**every, "rounds": 6, "eval_every": 3}  # evaluation may change on resume: training does not
    run_suite(tiny_suite(**resumed), tmp_path / "sparse", resume=True, log=quiet)
    sparse_rounds, _ = records(sparse / "heterofl-seed0")
    assert [r["accuracy"] is not None for r in sparse_rounds] == [False, True, False, True, True, True]
    with pytest.raises(ConfigError, match="eval_every must be at least 1"):
        tiny_suite(eval_every=0)


def test_the_allocator_gate_adds_each_task_kinds_measured_overhead(monkeypatch):
    """``measure.gate = "allocator"``: a budget between the estimate and the estimate plus the GPU
    allocator's overhead (measured once per task kind) is refused, naming the bytes needed."""
    measured = []
    monkeypatch.setattr(methods_module, "allocator_overhead", lambda *args: measured.append(args) or MB)
    ctx = context(labels={1: [10] * 10, 2: [10] * 10, 3: [1] * 5 + [0] * 5})  # device 3's: one batch of 5
    ctx.estimator.allocator = True
    exclusive = method("exclusive", ctx)
    peak = exclusive.estimate(TaskSpec("full")).peak
    tight, roomy = Device(1, peak + MB // 2), Device(2, peak + MB)
    planned = plan_round(exclusive, 1, [tight, roomy])
    assert [c.reason for c in planned] == [over_budget(tight, TaskSpec("full"), peak + MB), ""]
    assert planned[0].estimate.peak == peak and len(measured) == 1
    assert len(ctx.estimator.costs) == 1
    plan_round(exclusive, 1, [Device(3, peak)])  # another batch, the same task: measured once
    assert len(ctx.estimator.costs) == 2 and len(measured) == 1


def test_the_allocator_gate_needs_a_gpu(tmp_path, quiet):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        run_suite(tiny_suite(measure={"gate": "allocator"}), tmp_path, log=quiet)
    assert not (tmp_path / "tiny").exists()


def test_a_client_on_the_cpu_seeds_only_the_cpu_generator(monkeypatch):
    """``torch.manual_seed`` formats a stack trace for each accelerator not yet started; a CPU client
    gets the same random numbers from the CPU generator alone, a GPU client seeds them all."""
    torch.manual_seed(7)
    want = torch.rand(3)
    calls = []
    monkeypatch.setattr(torch, "manual_seed", calls.append)
    torch.rand(5)  # move the generator on
    seed_torch(7, torch.device("cpu"))
    assert torch.equal(torch.rand(3), want) and calls == []
    seed_torch(7, torch.device("cuda"))
    assert calls == [7]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``, read back as TensorBoard does."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_each_rounds_scalars_as_its_records_say(tmp_path, quiet):
    """Per run, one folder of event files whose scalars are the round records' values by round; a
    resume that adds a round adds its scalars (and rewrites none); a value the round has not is left out."""
    pytest.importorskip("tensorboard")
    run_suite(tiny_suite(rounds=1, tensorboard=str(tmp_path / "tb")), tmp_path, log=quiet)
    run_suite(tiny_suite(rounds=2, tensorboard=str(tmp_path / "tb")), tmp_path, resume=True, log=quiet)
    rounds = read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")
    scalars = tensorboard_scalars(tmp_path / "tb" / "tiny" / "fedavg-seed0")
    assert [step for step, _ in scalars["accuracy/test"]] == [1, 2]
    assert [step for step, _ in scalars["memory/peak_measured_MB"]] == [1]
    for tag, of in (("accuracy/test", lambda r: r["accuracy"]), ("loss/test", lambda r: r["loss"]),
                    ("memory/peak_measured_MB", lambda r: r["peak_tensor"] and r["peak_tensor"] / MB),
                    ("time/device_total_s", lambda r: r["device_wall_time"]),
                    ("participation/took_part", lambda r: r["participated"] / r["devices"]),
                    ("communication/up_MB", lambda r: r["bytes_up"] / MB)):
        assert scalars[tag] == [(r["round"], pytest.approx(of(r), rel=1e-6)) for r in rounds
                                if of(r) is not None], tag  # round 2 measured no client: no measured peak
    assert sorted(scalars) == sorted(["accuracy/test", "loss/test", "memory/peak_measured_MB",
                                      "memory/peak_estimated_MB", "time/device_round_s", "time/device_total_s",
                                      "time/host_round_s", "participation/took_part", "participation/offered",
                                      "participation/eligible", "communication/up_MB", "communication/down_MB"])


def test_tensorboard_without_its_package_is_one_line_before_anything_is_written(tmp_path, quiet, monkeypatch):
    import harness.scalars

    monkeypatch.setattr(harness.scalars, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs the tensorboard package.*\[tensorboard\]"):
        run_suite(tiny_suite(rounds=1, tensorboard=str(tmp_path / "tb")), tmp_path, log=quiet)
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "tb").exists()


def test_tensorboard_tags_every_evaluated_model_and_leaves_out_what_a_round_has_not():
    from harness.scalars import round_scalars

    record = {"round": 3, "accuracy": None, "loss": None, "devices": 4, "participated": 2, "offered": 3, "eligible": 3,
              "evals": {"full": {"accuracy": None, "loss": None}, "stage": {"accuracy": 0.5, "loss": 1.0}},
              "peak_tensor": None, "peak_estimate": 3 * MB, "device_time": 2.0, "device_wall_time": 6.0,
              "round_time": 0.5, "bytes_up": MB, "bytes_down": 2 * MB}
    assert round_scalars(record) == {
        "accuracy/stage": 0.5, "memory/peak_estimated_MB": 3.0, "time/device_round_s": 2.0,
        "time/device_total_s": 6.0, "time/host_round_s": 0.5, "participation/took_part": 0.5,
        "participation/offered": 0.75, "participation/eligible": 0.75, "communication/up_MB": 1.0,
        "communication/down_MB": 2.0}


def test_selected_client_lines_give_the_reports_every_number_the_full_lines_do(tmp_path, quiet):
    """``client_lines = "selected"`` writes lines for the selected devices only and the rest as counts in
    the round line; training is the same, and the report's summary, the fleet that fits per round and
    the stage table read the same from either."""
    from reports.load import load_suite
    from reports.stages import stage_table
    from reports.stats import fits_per_round
    from reports.tables import summarize

    over = dict(rounds=3, clients_per_round=3, fleet={"devices": 12, "low_mb": 0.1, "high_mb": 1.5},
                methods=[{"method": "fedavg"}, {"method": "heterofl"}, {"method": "neulite"}])
    folders = {mode: run_suite(tiny_suite(**over, client_lines=mode), tmp_path / mode, log=quiet)
               for mode in ("all", "selected")}
    suites = {mode: load_suite(folder) for mode, folder in folders.items()}
    for label in ("fedavg", "heterofl", "neulite"):
        full, few = (records(folders[mode] / f"{label}-seed0") for mode in ("all", "selected"))
        assert [(c["round"], c["device"]) for c in few[1]] == [
            (c["round"], c["device"]) for c in full[1] if c["status"] not in ("not_selected", "excluded")]
        for a, b in zip(without_times(full[0]), without_times(few[0]), strict=True):
            assert {k: v for k, v in b.items() if k not in ("unselected", "exclusions")} == a
        for r, c in zip(few[0], [[c for c in full[1] if c["round"] == r["round"]] for r in few[0]], strict=True):
            assert sum(g["devices"] for g in r["unselected"]) == len(c) - r["selected"]
            assert sum(r["exclusions"].values()) == sum(x["status"] == "excluded" for x in c)
    summaries = {mode: summarize(suite, 0.5)[0].drop(columns=["host_time"]) for mode, suite in suites.items()}
    pd.testing.assert_frame_equal(summaries["all"], summaries["selected"])
    pd.testing.assert_frame_equal(fits_per_round(suites["all"].clients), fits_per_round(suites["selected"].clients))
    pd.testing.assert_frame_equal(stage_table(suites["all"].clients), stage_table(suites["selected"].clients))


def test_selected_client_lines_resume_as_the_full_ones_do(tmp_path, quiet):
    over = dict(client_lines="selected", fleet={"devices": 12})
    run_suite(tiny_suite(rounds=1, **over), tmp_path / "cut", log=quiet)
    run_suite(tiny_suite(rounds=2, **over), tmp_path / "cut", resume=True, log=quiet)
    straight = run_suite(tiny_suite(rounds=2, **over), tmp_path / "straight", log=quiet)
    cut = records(tmp_path / "cut" / "tiny" / "fedavg-seed0")
    for a, b in zip(cut, records(straight / "fedavg-seed0"), strict=True):
        assert without_times(a) == without_times(b)
    path = tmp_path / "cut" / "tiny" / "fedavg-seed0" / "clients.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))  # a line of round 1 lost
    with pytest.raises(RecordsError, match=r"client lines of rounds 1 in clients\.jsonl are missing or torn"):
        run_suite(tiny_suite(rounds=3, **over), tmp_path / "cut", resume=True, log=quiet)
