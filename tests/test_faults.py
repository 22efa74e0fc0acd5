"""Records that cannot be corrupted, and bad input that gets one clear line (docs/records.md).

Real runs are killed at random moments and at the exact points where records are written; two
writers, torn or deleted records, unsafe names, stale caches and late errors are each tried.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, start, tiny_raw, tiny_suite, wait_for_rounds, write_toml
from PIL import Image

from harness import interrupts
from harness.cli import main
from harness.config import ConfigError, DataConfig
from harness.data import PartitionError, load_data, partition
from harness.data.datasets import DataError
from harness.engine import run_suite
from harness.memory import TensorTracker
from harness.records import CHECKPOINT, RecordsError, RunWriter, SuiteLock, read_jsonl
from harness.suites import suite_from_dict

from helpers import records, without_times


# ---- killed runs ---------------------------------------------------------------------------------
# SIGKILL (no handler runs) in the default run; the handled signals with the slow tests (CI runs both)
@pytest.mark.parametrize("how", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_killed_run_resumes_with_no_record_lost_or_doubled(tmp_path, how):
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=40)
    run_dir = tmp_path / "out" / "killme" / "exclusive-seed0"
    proc = start([str(suite), "--out", "out"], tmp_path)
    wait_for_rounds(run_dir / "rounds.jsonl", 3, proc)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted: every completed round" in err
    if how == signal.SIGTERM:  # as a batch scheduler stops a job: one line, 128 + 15
        assert proc.returncode == 143 and err.strip().splitlines()[-1].startswith("terminated (SIGTERM): every")
    done = len(read_jsonl(run_dir / "rounds.jsonl"))
    assert 3 <= done < 40
    resumed = start([str(suite), "--out", "out", "--resume"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming after round" in out

    straight = start([str(suite), "--out", "ref"], tmp_path)
    assert straight.wait(timeout=300) == 0
    ref_dir = tmp_path / "ref" / "killme" / "exclusive-seed0"
    for name in ("rounds.jsonl", "clients.jsonl"):
        got, want = read_jsonl(run_dir / name), read_jsonl(ref_dir / name)
        assert [r["round"] for r in got] == [r["round"] for r in want]
        assert without_times(got) == without_times(want)
    a = torch.load(run_dir / CHECKPOINT)["method"]["model"]
    b = torch.load(ref_dir / CHECKPOINT)["method"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)




@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the callback's, dropped
def test_ctrl_c_during_a_weakref_callback_still_stops_the_run(tmp_path, monkeypatch, capsys):
    """Python drops an exception raised in a weak-reference callback, where the tracker frees
    storages during every measured step: a Ctrl-C there must still stop the run (not let it run
    to its end), with every completed round recorded and the run resumable."""
    write_toml(tmp_path / "s.toml", rounds=3)
    real_free, fired = TensorTracker._free, []

    def free(self, ref):
        if not fired:  # the first storage freed in round 1's measured step: a Ctrl-C lands here
            fired.append(True)
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        real_free(self, ref)

    monkeypatch.setattr(TensorTracker, "_free", free)
    suite = [str(tmp_path / "s.toml"), "--out", str(tmp_path / "out")]
    assert main(["run", *suite]) == 130
    assert fired and "continue with --resume" in capsys.readouterr().err
    monkeypatch.setattr(TensorTracker, "_free", real_free)
    assert main(["run", *suite, "--resume"]) == 0
    assert len(read_jsonl(tmp_path / "out" / "killme" / "exclusive-seed0" / "rounds.jsonl")) == 3


def test_sticky_interrupts_restore_the_handler():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.sticky():
        assert signal.getsignal(signal.SIGINT) is not before
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is before
    interrupts.check()  # nothing pending once the command is over


@pytest.mark.parametrize("point", ["half the client lines", "half the round line", "the checkpoint"])
def test_a_run_killed_at_a_write_point_resumes_to_the_same_records(tmp_path, quiet, monkeypatch, point):
    """Round 2's records are cut at the given point, as a kill would leave them; the resume redoes
    round 2 and ends with the records and weights of an uninterrupted run."""
    cfg = tiny_suite(rounds=3)
    run_suite(cfg, tmp_path / "ref", log=quiet)
    real_append, real_save = RunWriter._append, RunWriter.save_checkpoint

    def append(self, name, rows):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        cut = {"half the client lines": "clients.jsonl", "half the round line": "rounds.jsonl"}.get(point)
        if rows and rows[0]["round"] == 2 and name == cut:
            with (self.folder / name).open("a") as f:
                f.write(text[: len(text) // 2])
            raise KeyboardInterrupt
        real_append(self, name, rows)

    def save(self, state):
        if state["round"] == 2 and point == "the checkpoint":
            self.checkpoint_path.with_suffix(".tmp").write_bytes(b"\x80half a pickle")
            raise KeyboardInterrupt
        real_save(self, state)

    monkeypatch.setattr(RunWriter, "_append", append)
    monkeypatch.setattr(RunWriter, "save_checkpoint", save)
    with pytest.raises(KeyboardInterrupt):
        run_suite(cfg, tmp_path / "cut", log=quiet)
    monkeypatch.undo()
    run_suite(cfg, tmp_path / "cut", resume=True, log=quiet)
    got, want = tmp_path / "cut" / "tiny" / "fedavg-seed0", tmp_path / "ref" / "tiny" / "fedavg-seed0"
    for a, b in zip(records(got), records(want), strict=True):
        assert without_times(a) == without_times(b)
    x, y = torch.load(got / CHECKPOINT)["method"]["model"], torch.load(want / CHECKPOINT)["method"]["model"]
    assert all(torch.equal(x[k], y[k]) for k in x)


# ---- 1: partitions at any alpha ------------------------------------------------------------------

def test_a_tiny_dirichlet_alpha_puts_each_class_on_one_client():
    """Before: at alpha 1e-4 the gamma draws underflowed and the split came out near-IID (8 of 10
    classes per client). Now each class sits (almost) whole on one client."""
    labels = torch.arange(1000) % 10
    parts = partition(labels, 4, DataConfig(alpha=1e-4, min_samples=1), 3)
    for c in range(10):
        shares = sorted((labels[p] == c).sum().item() for p in parts)
        assert shares[-1] >= 99  # of the class's 100 samples
    assert sum(len(torch.unique(labels[p])) for p in parts) <= 12


def test_an_infeasible_partition_is_refused_before_any_draw(monkeypatch):
    labels = load_data(DataConfig()).train_y

    def no_draw(*args, **kwargs):
        raise AssertionError("drew proportions for a partition that cannot be made")

    monkeypatch.setattr(importlib.import_module("harness.data.partition"), "dirichlet_proportions", no_draw)
    for devices in (5_000, 10_000_000):
        with pytest.raises(PartitionError, match="the training set has 1438"):
            partition(labels, devices, DataConfig(), 0)


# ---- 2: one writer per suite folder ----------------------------------------------------------------

def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, quiet):
    folder = tmp_path / "tiny"
    folder.mkdir()
    with SuiteLock(folder):
        for resume in (False, True):
            with pytest.raises(RecordsError, match=rf"another harness process \(pid {os.getpid()} on "):
                run_suite(tiny_suite(rounds=1), tmp_path, resume=resume, log=quiet)
    assert not (folder / "suite.json").exists()
    (folder / ".lock").write_text("999999")  # left by a process that died: no OS lock is held
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    assert len(read_jsonl(folder / "fedavg-seed0" / "rounds.jsonl")) == 1


def test_a_writer_refused_the_lock_removes_nothing(tmp_path, quiet, monkeypatch):
    """Two processes start on a new folder; the one that loses the lock must not remove the
    folder the other has just created and is writing."""
    class Taken:
        def __init__(self, folder):
            pass

        def __enter__(self):
            raise RecordsError("another harness process (pid 1 on elsewhere) is writing it")

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr("harness.engine.SuiteLock", Taken)
    with pytest.raises(RecordsError, match="another harness process"):
        run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    assert (tmp_path / "tiny").is_dir()


def test_a_file_system_without_locks_warns_and_runs(tmp_path, quiet, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    assert "cannot lock" in capsys.readouterr().err
    assert len(read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")) == 1


# ---- 3, 5: a resume writes nothing it refuses, and drops no run ------------------------------------

def test_a_refused_resume_leaves_suite_json_as_it_was(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    before = (tmp_path / "tiny" / "suite.json").read_text()
    with pytest.raises(ConfigError, match="another config"):
        run_suite(tiny_suite(rounds=1, data={"alpha": 0.05}), tmp_path, resume=True, log=quiet)
    assert (tmp_path / "tiny" / "suite.json").read_text() == before


def test_a_resume_with_other_seeds_keeps_the_finished_ones(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    run_suite(tiny_suite(rounds=1, seeds=[1]), tmp_path, resume=True, log=quiet)
    suite = json.loads((tmp_path / "tiny" / "suite.json").read_text())
    assert [r["dir"] for r in suite["runs"]] == ["fedavg-seed0", "fedavg-seed1"]
    assert suite["config"]["seeds"] == [0, 1]
    from reports.load import load_suite

    assert sorted(load_suite(tmp_path / "tiny").rounds["seed"].unique()) == [0, 1]


# ---- 4: records checked against the checkpoint -----------------------------------------------------

@pytest.mark.parametrize(("damage", "message"), [
    ("torn round line", r"round lines 2 in rounds.jsonl"),
    ("deleted rounds", r"round lines 1, 2, 3 in rounds.jsonl"),
    ("deleted clients", r"client lines of rounds 1, 2, 3 in clients.jsonl"),
    ("foreign round line", r"round lines 2 in rounds.jsonl"),
    ("undecodable round line", r"round lines 2 in rounds.jsonl"),
])
def test_records_missing_below_the_checkpoint_refuse_the_resume(tmp_path, quiet, damage, message):
    run_suite(tiny_suite(rounds=3), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    if damage == "torn round line":
        lines = (run / "rounds.jsonl").read_text().splitlines(True)
        lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
        (run / "rounds.jsonl").write_text("".join(lines))
    elif damage == "foreign round line":
        lines = (run / "rounds.jsonl").read_text().splitlines(True)
        lines[1] = "[1]\n"
        (run / "rounds.jsonl").write_text("".join(lines))
    elif damage == "undecodable round line":
        lines = (run / "rounds.jsonl").read_bytes().splitlines(True)
        lines[1] = b"\xff\xfe\x00" + lines[1][3:]
        (run / "rounds.jsonl").write_bytes(b"".join(lines))
    else:
        (run / ("rounds.jsonl" if damage == "deleted rounds" else "clients.jsonl")).unlink()
    with pytest.raises(RecordsError, match=message + " are missing or torn"):
        run_suite(tiny_suite(rounds=4), tmp_path, resume=True, log=quiet)
    assert len(read_jsonl(run / "clients.jsonl")) in (0, 18)  # nothing rewritten


def test_bytes_past_the_checkpoint_that_are_not_text_are_dropped_by_a_resume(tmp_path, quiet):
    """A write cut inside a character (or foreign bytes) after the last complete round is a torn
    line like any other: the resume drops it and goes on."""
    run_suite(tiny_suite(rounds=2), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    before = records(run)
    for name in ("rounds.jsonl", "clients.jsonl"):
        with open(run / name, "ab") as f:
            f.write(b'{"round": 3, "label": "\xc3')
    run_suite(tiny_suite(rounds=3), tmp_path, resume=True, log=quiet)
    rounds, clients = records(run)
    assert [r["round"] for r in rounds] == [1, 2, 3] and (rounds[:2], clients[:12]) == before
    assert b"\xc3" not in (run / "rounds.jsonl").read_bytes() + (run / "clients.jsonl").read_bytes()


def test_a_resume_with_fewer_rounds_than_recorded_is_refused(tmp_path, quiet):
    run_suite(tiny_suite(rounds=3), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    before = records(run), (tmp_path / "tiny" / "suite.json").read_text()
    with pytest.raises(ConfigError, match="with rounds = 2: it has 3 rounds recorded; a resume may add rounds"):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert (records(run), (tmp_path / "tiny" / "suite.json").read_text()) == before


def test_a_resume_that_adds_rounds_and_stops_short_reads_as_stopped(tmp_path, quiet):
    """A resume that adds rounds writes them into the run's manifest, which the report holds the run
    to; a finished run the resume did not touch keeps its own."""
    from reports.load import load_suite

    run_suite(tiny_suite(rounds=2, seeds=[0, 1]), tmp_path, log=quiet)

    def stop_after_round_3(line: str) -> None:
        if " round 3/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(tiny_suite(rounds=4, seeds=[0]), tmp_path, resume=True, log=stop_after_round_3, verbose=True)
    manifest = json.loads((tmp_path / "tiny" / "fedavg-seed0" / "manifest.json").read_text())
    assert manifest["config"]["rounds"] == 4
    notes = load_suite(tmp_path / "tiny").notes
    assert "fedavg seed 0: 3 of 4 rounds recorded (still running or stopped)" in notes
    assert not any(note.startswith("fedavg seed 1") for note in notes)  # 2 of its 2 rounds


def test_a_deleted_checkpoint_does_not_drop_the_finished_rounds(tmp_path, quiet):
    run_suite(tiny_suite(rounds=3), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    before = records(run)
    (run / CHECKPOINT).unlink()
    with pytest.raises(RecordsError, match=r"records reach round 3 but its checkpoint\.pt is missing"):
        run_suite(tiny_suite(rounds=3), tmp_path, resume=True, log=quiet)
    assert records(run) == before


def test_a_resume_that_would_give_other_clients_is_refused(tmp_path, quiet):
    """The same config, but a trace file edited since: the records are of another fleet."""
    trace = tmp_path / "fleet.csv"
    trace.write_text("device_id,memory_mb\n" + "".join(f"{i},{1 + i / 4}\n" for i in range(6)))
    cfg = {"fleet": {"distribution": "trace", "trace": str(trace)}}
    run_suite(tiny_suite(rounds=1, **cfg), tmp_path, log=quiet)
    trace.write_text("device_id,memory_mb\n" + "".join(f"{i},{2 + i / 4}\n" for i in range(6)))
    with pytest.raises(ConfigError, match="now gives another fleet"):
        run_suite(tiny_suite(rounds=2, **cfg), tmp_path, resume=True, log=quiet)


@pytest.mark.parametrize("broken", ["checkpoint.pt", "manifest.json"])
def test_a_corrupt_checkpoint_or_manifest_is_one_line(tmp_path, quiet, capsys, broken):
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=1)
    assert main(["run", str(suite), "--out", str(tmp_path)]) == 0
    (tmp_path / "killme" / "exclusive-seed0" / broken).write_bytes(b"")
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(tmp_path), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and broken in err and ("does not load" in err or "does not parse" in err)


# ---- 6: names are single, safe path components ---------------------------------------------------

@pytest.mark.parametrize("over", [
    {"methods": [{"method": "fedavg", "label": "../evil"}]},
    {"methods": [{"method": "fedavg", "label": "/abs/dir"}]},
    {"name": "../../escape"},
    {"name": "a/b"},
])
def test_unsafe_names_are_config_errors(over):
    with pytest.raises(ConfigError, match="not a safe folder name"):
        suite_from_dict(tiny_raw(**over))


# ---- 7: the image folder cache follows the files --------------------------------------------------

def write_images(root: Path, value: int, per_class: int = 2) -> None:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(root / split / cls / f"{i}.png")


def test_the_image_cache_is_rebuilt_when_files_change(tmp_path):
    write_images(tmp_path, 10)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    assert load_data(cfg).train_x.unique().tolist() == [10]
    time.sleep(0.01)
    write_images(tmp_path, 200)  # same names and sizes, new pixels and times
    assert load_data(cfg).train_x.unique().tolist() == [200]
    (tmp_path / "train" / "a" / "1.png").unlink()
    assert len(load_data(cfg).train_y) == 3


def test_bad_image_folders_say_what_is_wrong(tmp_path):
    write_images(tmp_path, 10)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken.png is not a readable image"):
        load_data(cfg)
    (tmp_path / "train" / "a" / "broken.png").unlink()
    (tmp_path / "test" / "c").mkdir()
    with pytest.raises(DataError, match="not in train: c"):
        load_data(cfg)
    (tmp_path / "test" / "c").rmdir()
    for f in (tmp_path / "test" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="empty class folders: b"):
        load_data(cfg)
    (tmp_path / "test" / "b").rmdir()
    with pytest.raises(DataError, match="missing: b"):
        load_data(cfg)


# ---- 8: the estimate at the batch a client can form -----------------------------------------------

def test_clients_smaller_than_a_batch_are_estimated_at_their_own_size(tmp_path, quiet):
    """Batch 200 and clients of about 53 samples: the estimate is each client's own batch, equal to
    what it measures, so ExclusiveFL no longer shuts every device out."""
    cfg = tiny_suite(rounds=1, batch_size=200, methods=[{"method": "exclusive"}], fleet={"low_mb": 0.5, "high_mb": 2},
                     measure={"clients": "all"})
    clients = read_jsonl(run_suite(cfg, tmp_path, log=quiet) / "exclusive-seed0" / "clients.jsonl")
    trained = [c for c in clients if c["status"] == "trained"]
    assert trained and all(c["memory"]["tensor"] == c["estimate"] for c in trained)


def test_a_short_last_batch_is_estimated_as_it_is_trained(tmp_path, quiet):
    """Batch 48: a client trains full steps and a short last one (a single left-over sample is
    left out); the short one can hold the peak only when micro-batches cut it into a larger piece,
    so a client is estimated at its full batch (at its own size when smaller), and at its short one
    in that case; the estimate equals the measurement."""
    from helpers import context

    estimator = context(batch=48).estimator
    assert [estimator.batch_sizes(n) for n in (None, 20, 48, 49, 67, 100, 200)] == [
        (48,), (20,), (48,), (48,), (48,), (48,), (48,)]
    assert [estimator.batch_sizes(n, micro_batch=4) for n in (20, 53, 54, 67)] == [
        (20,), (48, 5), (48,), (48,)]  # 48 in 4s; 5 is 4 + 1, joined: a 5; 6 is 4 + 2; 19 is 4s and a 3
    cfg = tiny_suite(rounds=1, batch_size=48, methods=[{"method": "allsmall"}], measure={"clients": "all"})
    clients = read_jsonl(run_suite(cfg, tmp_path, log=quiet) / "allsmall-seed0" / "clients.jsonl")
    trained = [c for c in clients if c["status"] == "trained"]
    assert trained and all(c["memory"]["tensor"] == c["estimate"] for c in trained)


# ---- 9: errors found before anything is written ---------------------------------------------------

def test_a_method_error_stops_the_suite_before_anything_is_written(tmp_path, quiet):
    cfg = tiny_suite(methods=[{"method": "fedavg"}, {"method": "depthfl", "depths": [4]}])
    with pytest.raises(ConfigError, match="exceed the 3 blocks"):
        run_suite(cfg, tmp_path, log=quiet)
    assert not (tmp_path / "tiny").exists()
    with pytest.raises(PartitionError, match="need 10000 samples; the training set has 320"):
        run_suite(tiny_suite(fleet={"devices": 5000}, data={"partition": "dirichlet"}), tmp_path, log=quiet)
    assert not (tmp_path / "tiny").exists()


# ---- 10, 11: one clear line -------------------------------------------------------------------------

def test_a_nan_evaluation_loss_stops_with_one_line_and_keeps_the_rounds(tmp_path, quiet, monkeypatch):
    import harness.engine as engine

    calls = {"n": 0}
    real = engine.evaluate

    def nan_later(model, batches):
        calls["n"] += 1
        accuracy, loss = real(model, batches)
        return (accuracy, float("nan")) if calls["n"] > 2 else (accuracy, loss)

    monkeypatch.setattr(engine, "evaluate", nan_later)
    from harness.training import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"round 3: the global model's evaluation loss is nan"):
        run_suite(tiny_suite(rounds=4), tmp_path, log=quiet)
    assert [r["round"] for r in read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")] == [1, 2]


@pytest.mark.parametrize(("over", "message"), [
    ({"fleet": {"high_mb": float("inf")}}, "budgets must be finite"),
    ({"seeds": [-1]}, r"seeds must be in \[0, 2\*\*32\)"),
    ({"seeds": [2**64]}, r"seeds must be in \[0, 2\*\*32\)"),
    ({"methods": [{"method": "neulite", "stage_rounds": [2]}]}, "apply to schedule = 'sequential' only"),
    # values that once passed validation and failed later (overflow in round 1, a device time of inf)
    ({"optimizer": {"lr": 1e300}}, r"optimizer.lr must be in \(0, 100\]"),
    ({"optimizer": {"lr": float("inf")}}, r"optimizer.lr must be in \(0, 100\]"),
    ({"fleet": {"gflops": [5e-324]}}, r"fleet.gflops: give values in \[1e-06, 1e\+09\]"),
    ({"fleet": {"up_mbps": [1e300]}}, r"fleet.up_mbps: give values in \[1e-06, 1e\+09\]"),
    ({"data": {"synthetic_samples": -5}}, "data.synthetic_samples must be at least 50"),
])
def test_bad_values_are_config_errors(over, message):
    with pytest.raises(ConfigError, match=message):
        suite_from_dict(tiny_raw(**over))


def test_a_trace_with_a_speed_the_time_model_cannot_take_is_refused(tmp_path):
    trace = tmp_path / "fleet.csv"
    trace.write_text("0,3,5e-324\n1,4\n")
    with pytest.raises(ConfigError, match=r"fleet.csv:1: .*speeds in \[1e-06, 1e\+09\]"):
        run_suite(tiny_suite(fleet={"distribution": "trace", "trace": str(trace)}, clients_per_round=1), tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_a_trace_whose_first_row_is_data_is_read_as_data(tmp_path):
    trace = tmp_path / "fleet.csv"
    trace.write_text("-1,3\n1,4\n")
    with pytest.raises(ConfigError, match=r"fleet.csv:1: device ids must be >= 0"):
        run_suite(tiny_suite(fleet={"distribution": "trace", "trace": str(trace)}, clients_per_round=1), tmp_path)


def test_unwritable_output_and_full_disks_are_one_line(tmp_path, capsys, monkeypatch):
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=3)
    (tmp_path / "afile").write_text("")
    assert main(["run", str(suite), "--out", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create the suite folder" in err
    real = RunWriter._append

    def full(self, name, rows):
        if rows and rows[0]["round"] == 2:
            raise OSError(28, "No space left on device", str(self.folder / name))
        real(self, name, rows)

    monkeypatch.setattr(RunWriter, "_append", full)
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "clients.jsonl" in err
    assert len(read_jsonl(tmp_path / "out" / "killme" / "exclusive-seed0" / "rounds.jsonl")) == 1


def test_a_plugin_that_fails_to_import_is_one_line_and_help_still_works(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    (tmp_path / "twice_plugin.py").write_text(
        "from harness.methods import register_method\nfrom baselines.fedavg import FedAvg\n"
        "register_method('fedavg')(type('Again', (FedAvg,), {}))\n")
    (tmp_path / "exit_plugin.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    assert exit_help.value.code == 0
    for plugin, message in (("bad_plugin", "broken on purpose"), ("twice_plugin", "registered twice"),
                            ("exit_plugin", "it called sys.exit(0)")):  # not a run that did nothing and exited 0
        monkeypatch.setenv("FL_HARNESS_PLUGINS", plugin)  # every command imports the plugins first
        capsys.readouterr()
        assert main(["list"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot import {plugin!r}" in err and message in err


@pytest.mark.parametrize("args", [["--batch", "0"], ["--width", "-1"], ["--classes", "0"], ["--steps", "-2"],
                                  ["--width", "1.5"]])
def test_memory_refuses_sizes_that_are_not_positive(args, capsys):
    try:
        code = main(["memory", "cnn", "--input", "1,8,8", *args])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2 and "| task |" not in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["run"], ["memory"], ["tables"], ["overhead"], ["scaling"]])
def test_help_texts_are_plain_text(command, capsys):
    """--help prints prose, not the reStructuredText of docstrings."""
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "usage: python -m harness" in out and "``" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["tables", "--batches", "abc"], "expected a positive int, got 'abc'"),
    (["tables", "--batches=-4"], "must be positive, got -4"),
    (["tables", "--batches", "0"], "must be positive, got 0"),
    (["tables", "--batches", ","], "expected comma-separated positive integers"),
    (["tables", "--models", ","], "--models: none given"),
    (["tables", "--models", "resnet99"], "--models: unknown 'resnet99'"),
    (["memory", "cnn", "--momentum", "-0.5"], "must be in [0, 1), got -0.5"),
    (["memory", "cnn", "--momentum", "1"], "must be in [0, 1), got 1"),
    (["memory", "cnn", "--momentum", "fast"], "expected a number in [0, 1), got 'fast'"),
    (["memory", "cnn", "--input", "1,x,8"], "--input"),
])
def test_bad_command_line_arguments_are_one_line(args, message, capsys):
    """Every argument gets the one-line error a suite key gets: no traceback, no table."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err and "|" not in out
    assert err.strip().splitlines()[-1].count(message) == 1


def test_a_suite_path_that_is_not_a_file_is_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the suite file" in err and "recorded" not in err


def test_ctrl_c_while_importing_is_one_line():
    """Ctrl-C while torch is being imported (made certain: the import itself is interrupted)."""
    interrupt_torch = ("import runpy, sys\n"
                       "class Interrupt:\n"
                       "    def find_spec(self, name, path=None, target=None):\n"
                       "        if name == 'torch':\n"
                       "            raise KeyboardInterrupt\n"
                       "sys.meta_path.insert(0, Interrupt())\n"
                       "sys.argv = ['harness', '--help']\n"
                       "runpy.run_module('harness', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", interrupt_torch], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted before anything ran"


def test_a_model_too_deep_for_the_images_is_one_line(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=1)
    assert main(["run", str(suite), "--out", str(tmp_path), "--set", "model.name=vgg11"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model vgg11 cannot take 1x8x8 inputs" in err
    assert not (tmp_path / "killme").exists()
    assert main(["memory", "vgg11", "--input", "1,28,28"]) == 2
    assert "give a larger --input" in capsys.readouterr().err


# ---- a shared suite folder is data, never code -------------------------------------------------

class Planted:
    """What a hostile checkpoint holds: an object whose unpickling runs code (here: writes a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_checkpoint_holding_an_object_is_refused_and_never_unpickled(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    checkpoint = tmp_path / "tiny" / "fedavg-seed0" / CHECKPOINT
    state = torch.load(checkpoint, weights_only=True)
    marker = tmp_path / "marker"
    torch.save({**state, "method": {"model": state["method"]["model"], "x": Planted(marker)}}, checkpoint)
    with pytest.raises(RecordsError, match=r"more than tensors and plain containers .*data"):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert not marker.exists()


@pytest.mark.parametrize("planted", [".lock", "fedavg-seed0/.lock", "fedavg-seed0/checkpoint.tmp",
                                     "fedavg-seed0/rounds.jsonl", "fedavg-seed0/run.log", "suite.json.tmp"])
def test_a_link_planted_in_a_suite_folder_is_refused_and_its_target_untouched(tmp_path, quiet, planted):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "tiny" / planted
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    with pytest.raises(RecordsError, match=f"{link.name}: a symbolic link in a suite folder"):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert victim.read_text() == "precious\n"


def test_a_run_folder_that_is_a_link_is_refused(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    run.rename(tmp_path / "elsewhere")
    run.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RecordsError, match="fedavg-seed0: a symbolic link in a suite folder"):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert len(read_jsonl(tmp_path / "elsewhere" / "rounds.jsonl")) == 1


def test_temporary_files_are_created_afresh_never_through_a_link(tmp_path):
    from harness.records import open_new, write_json

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "out.json.tmp").symlink_to(victim)
    write_json(tmp_path / "out.json", {"a": 1})
    assert victim.read_text() == "precious\n" and json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    (tmp_path / "x.tmp").symlink_to(victim)
    with open_new(tmp_path / "x.tmp") as f:
        f.write("new")
    assert victim.read_text() == "precious\n" and not (tmp_path / "x.tmp").is_symlink()


def test_a_label_that_names_another_method_is_not_resumed(tmp_path, quiet):
    """fedavg and exclusive share a parameter class: the method name is part of the run's identity."""
    run_suite(tiny_suite(rounds=1, methods=[{"method": "fedavg", "label": "x"}]), tmp_path, log=quiet)
    with pytest.raises(ConfigError, match="made by method 'fedavg' and its label now names 'exclusive'"):
        run_suite(tiny_suite(rounds=2, methods=[{"method": "exclusive", "label": "x"}]), tmp_path, resume=True,
                  log=quiet)
    assert len(read_jsonl(tmp_path / "tiny" / "x-seed0" / "rounds.jsonl")) == 1


def test_a_deleted_manifest_is_named_as_such(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    (tmp_path / "tiny" / "fedavg-seed0" / "manifest.json").unlink()
    with pytest.raises(RecordsError, match=r"its manifest\.json is missing"):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)


def test_a_suite_file_may_not_name_a_ray_cluster(tmp_path):
    """A shared suite file would join the cluster it names; the command line may."""
    from harness.suites import load_suite

    path = tmp_path / "s.toml"
    write_toml(path, rounds=1)
    assert load_suite(path, ["ray.address=auto"]).ray.address == "auto"
    path.write_text(path.read_text() + '\n[ray]\naddress = "evil.example:6379"\n')
    with pytest.raises(ConfigError, match=r"ray.address may not be set in a suite file .*--set ray.address=ADDR"):
        load_suite(path)


def test_a_resume_drops_a_suite_json_entry_that_points_outside_the_suite(tmp_path, quiet):
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    path = tmp_path / "tiny" / "suite.json"
    info = json.loads(path.read_text())
    info["runs"].append({"label": "x", "method": "fedavg", "seed": 0, "dir": "../../other/tiny/x-seed0"})
    path.write_text(json.dumps(info))
    run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert [r["dir"] for r in json.loads(path.read_text())["runs"]] == ["fedavg-seed0"]


def test_an_out_folder_under_home_is_expanded(tmp_path, quiet, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run_suite(tiny_suite(rounds=1, out="~/runs"), log=quiet)
    assert (tmp_path / "home" / "runs" / "tiny" / "suite.json").is_file() and not (tmp_path / "~").exists()


def test_data_rewritten_under_an_unchanged_suite_is_not_resumed(tmp_path, quiet):
    """Same names, counts and config, other pixels: the manifest's content key tells them apart."""
    write_images(tmp_path / "data", 10)
    data = {"name": "imagefolder", "root": str(tmp_path / "data"), "image_size": 8}
    run_suite(tiny_suite(rounds=1, clients_per_round=2, fleet={"devices": 2}, data=data), tmp_path, log=quiet)
    time.sleep(0.01)
    write_images(tmp_path / "data", 200)
    with pytest.raises(ConfigError, match=r"made on other data .*files rewritten in place"):
        run_suite(tiny_suite(rounds=2, clients_per_round=2, fleet={"devices": 2}, data=data), tmp_path,
                  resume=True, log=quiet)
    assert len(read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")) == 1


def test_a_resume_by_other_code_is_refused_unless_allowed_and_then_recorded(tmp_path, quiet, monkeypatch):
    """An edit that keeps shapes would resume silently: the source hash tells, uncommitted or not."""
    import harness.records
    import harness.resume

    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    first = json.loads((run / "manifest.json").read_text())["code"]
    assert first == harness.records.code_identity() and len(first["source"]) == 32
    edited = {**first, "source": "0" * 32}  # the same commit with an uncommitted edit
    monkeypatch.setattr(harness.resume, "code_identity", lambda: edited)
    with pytest.raises(ConfigError, match=r"made by other code .*uncommitted edits.*--allow-code-change"):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert len(read_jsonl(run / "rounds.jsonl")) == 1
    run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet, allow_code_change=True)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["code"] == edited and manifest["code_history"] == [{**first, "rounds_up_to": 1}]
    assert len(read_jsonl(run / "rounds.jsonl")) == 2
    run_suite(tiny_suite(rounds=3), tmp_path, resume=True, log=quiet)  # the same code again: no flag needed


def test_the_report_names_every_commit_and_says_when_code_versions_mix(tmp_path, quiet):
    from reports.load import load_suite
    from reports.tables import provenance_table

    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    manifest_path = tmp_path / "tiny" / "fedavg-seed0" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["code_history"] = [{"commit": "abc", "source": "1" * 32, "rounds_up_to": 1}]
    manifest_path.write_text(json.dumps(manifest))
    rows = dict(provenance_table(load_suite(tmp_path / "tiny")).itertuples(index=False))
    assert "abc" in rows["git commit"].split(", ")
    assert rows["source versions"].startswith("2 (") and "mix code versions" in rows["source versions"]


def test_a_finished_run_is_not_refused_for_other_code(tmp_path, quiet, monkeypatch):
    """``tox -e quick`` resumes: after an update, the runs it finished need no new rounds, so no code check."""
    import harness.resume

    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    monkeypatch.setattr(harness.resume, "code_identity", lambda: {"commit": None, "source": "0" * 32})
    run_suite(tiny_suite(rounds=1), tmp_path, resume=True, log=quiet)


def test_a_bare_round_line_is_torn_for_the_resume_and_the_suite_runs_on(tmp_path, quiet):
    """A bare ``{"round": 5}`` in rounds.jsonl once passed the resume check and broke every later run
    of the suite; now it is a torn line past the checkpoint, dropped, and the round redone."""
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    path = tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({"round": 2}) + "\n")
    run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    rounds = read_jsonl(path)
    assert [r["round"] for r in rounds] == [1, 2] and all("accuracy" in r for r in rounds)


def test_sigterm_under_ray_is_one_line_and_the_suite_resumes(tmp_path):
    """Ray installs its own SIGTERM handler at start-up (whose exit was lost, the suite running on):
    the harness takes SIGTERM back, so a Ray suite stops as a local one does."""
    pytest.importorskip("ray")
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=40)
    run_dir = tmp_path / "out" / "killme" / "exclusive-seed0"
    proc = start([str(suite), "--out", "out", "--executor", "ray"], tmp_path)
    wait_for_rounds(run_dir / "rounds.jsonl", 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("terminated (SIGTERM): every completed round is recorded; "
                                            "continue with --resume")
    done = len(read_jsonl(run_dir / "rounds.jsonl"))
    assert 2 <= done < 40


def test_a_checkpoint_that_no_longer_fits_the_model_is_one_line_before_anything_is_written(tmp_path, quiet):
    """A shape-changing edit, resumed with --allow-code-change: torch's size mismatch becomes one line."""
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    checkpoint = tmp_path / "tiny" / "fedavg-seed0" / CHECKPOINT
    state = torch.load(checkpoint, weights_only=True)
    model = state["method"]["model"]
    first = next(iter(model))
    model[first] = torch.zeros(model[first].numel() + 1)
    torch.save(state, checkpoint)
    before = (tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl").read_bytes()
    with pytest.raises(RecordsError, match=r"checkpoint does not fit this code's fedavg \(RuntimeError: "):
        run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet, allow_code_change=True)
    assert (tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl").read_bytes() == before


def test_a_full_disk_names_its_file_even_where_the_error_does_not(tmp_path, capsys, monkeypatch):
    """A write's OSError on a full disk carries no file name, and torch.save's is a RuntimeError: both
    become one line naming the file."""
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=3)

    def no_space(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", no_space)
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.tmp" in err and "PytorchStreamWriter failed" in err
    assert "records written before it are kept" in err
    monkeypatch.undo()
    real_write = os.fdopen

    def unnamed(fd, mode="r", *args, **kwargs):
        f = real_write(fd, mode, *args, **kwargs)
        if mode == "a":
            def write(text):
                raise OSError(28, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(os, "fdopen", unnamed)
    assert main(["run", str(suite), "--out", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and ".jsonl" in err


def test_a_doubled_line_is_named_as_such_not_as_missing(tmp_path, quiet):
    run_suite(tiny_suite(rounds=2), tmp_path, log=quiet)
    path = tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[0] + lines[1])
    with pytest.raises(RecordsError, match=r"rounds 1 have more lines than one run writes"):
        run_suite(tiny_suite(rounds=3), tmp_path, resume=True, log=quiet)


def test_the_report_command_printed_at_the_end_is_shell_quoted(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    write_toml(suite, rounds=1)
    out = tmp_path / "my runs"
    assert main(["run", str(suite), "--out", str(out)]) == 0
    assert f"report:  python -m reports '{out}/killme'" in capsys.readouterr().out


def test_a_resume_with_nothing_past_the_checkpoint_rewrites_no_record_file(tmp_path, quiet):
    """A resume's cost is what it checks: whole files are rewritten only to drop what lies past the checkpoint."""
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    run = tmp_path / "tiny" / "fedavg-seed0"
    before = {name: (run / name).stat().st_ino for name in ("rounds.jsonl", "clients.jsonl")}
    run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert {name: (run / name).stat().st_ino for name in before} == before  # appended to, never replaced


def test_records_from_before_client_lines_existed_resume(tmp_path, quiet):
    """A config key added later (``client_lines``) reads as its old behaviour in older records."""
    run_suite(tiny_suite(rounds=1), tmp_path, log=quiet)
    path = tmp_path / "tiny" / "fedavg-seed0" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["client_lines"]
    path.write_text(json.dumps(manifest))
    run_suite(tiny_suite(rounds=2), tmp_path, resume=True, log=quiet)
    assert len(read_jsonl(tmp_path / "tiny" / "fedavg-seed0" / "rounds.jsonl")) == 2
