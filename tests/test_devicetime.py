"""The device time model: FLOPs counted by hand, client and round times, the deadline, records."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_suite
from torch import nn

from harness.config import OptimizerConfig
from harness.devicetime import client_time, round_device_time
from harness.engine import run_suite
from harness.estimate import FlopCounter, TaskCost, estimate_task
from harness.fleet import GFLOPS, MBITS, Device
from harness.methods import TaskSpec
from harness.training import Task, make_optimizer, training_step

from helpers import SHAPE, UNLIMITED, method


def test_flops_of_a_training_step_counted_by_hand():
    """A two-layer MLP: forward 2(d*h + h*c) per sample; backward the weight gradients of both
    layers and the input gradient of the second (the first layer's input needs none)."""
    d, h, c, batch = 12, 20, 5, 8
    cost = estimate_task(lambda: Task(nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, c))),
                         (d,), c, batch, OptimizerConfig(), steps=2)
    assert cost.flops_per_sample == 2 * (d * h + h * c) + 2 * d * h + 4 * h * c
    params = 4 * (d * h + h + h * c + c)
    assert cost.bytes_down == cost.bytes_up == params


def test_client_and_round_time():
    device = Device(0, 2**30, flops=2 * GFLOPS, up=1 * MBITS, down=4 * MBITS)
    cost = TaskCost(None, 1e6, bytes_down=1_000_000, bytes_up=250_000)
    t = client_time(device, cost, 1e6, samples=50, epochs=2)
    assert t.flops == 1e8 and t.compute == pytest.approx(0.05)
    assert t.comm == pytest.approx(1_000_000 / 500_000 + 250_000 / 125_000)  # 2 s down, 2 s up
    assert t.total == pytest.approx(4.05)
    assert round_device_time([1.0, 3.0], deadline=0.0, dropped=0) == 3.0
    assert round_device_time([1.0, 3.0], deadline=5.0, dropped=1) == 5.0  # the server waited for the deadline
    assert round_device_time([], deadline=2.0, dropped=2) == 2.0


def test_fjord_counts_the_expected_flops_of_its_sampled_widths():
    """A client's step draws p uniformly from the widths allowed (with ``distill``, after a p_max
    teacher pass): the expected FLOPs are the mean of those counted in a real step at each p."""

    def counted(m, p: float) -> float:
        task = m.client_task(1, UNLIMITED, TaskSpec("width", 0.6))
        task.loss.sample = lambda: p
        optimizer = make_optimizer(task.model, m.ctx.estimator.optimizer)
        with FlopCounter() as counter:
            training_step(task, optimizer, torch.randn(8, *SHAPE), torch.randint(0, 10, (8,)))
        return counter.total / 8

    steps = {}
    for distill in (False, True):
        m = method("fjord", distill=distill)
        steps[distill] = [counted(m, p) for p in m.allowed(0.6)]
        assert len(steps[distill]) == 3
        assert m.flops_per_sample(TaskSpec("width", 0.6)) == pytest.approx(sum(steps[distill]) / 3, rel=1e-9)
    assert all(kd > plain for kd, plain in zip(steps[True], steps[False], strict=True))  # the teacher's pass


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_carry_device_time_and_a_deadline_drops_stragglers(tmp_path, quiet):
    """Half the fleet computes at 1 MFLOP/s: its clients miss a 30 s deadline, are recorded as
    stragglers (not trained, not aggregated) and the round lasts until the deadline."""
    cfg = tiny_suite(rounds=2, deadline_s=30.0, fleet={"high_mb": 20.0, "low_mb": 10.0, "gflops": [0.001, 50.0]})
    run = run_suite(cfg, tmp_path, log=quiet) / "fedavg-seed0"
    rounds, clients = lines(run / "rounds.jsonl"), lines(run / "clients.jsonl")
    slow = [c for c in clients if c["status"] == "straggler"]
    trained = [c for c in clients if c["status"] == "trained"]
    assert slow and trained and all("deadline 30 s" in c["reason"] and c["device_time"] > 30 for c in slow)
    assert all(c["device_time"] <= 30 and c["device_time"] == pytest.approx(c["compute_time"] + c["comm_time"])
               for c in trained)
    manifest = json.loads((run / "manifest.json").read_text())
    speeds = {d["id"]: d["flops"] for d in manifest["fleet"]}
    for c in trained:  # compute time: the task's FLOPs over the device's FLOP/s
        assert c["compute_time"] == pytest.approx(c["flops"] / speeds[c["device"]])
    for r in rounds:
        dropped = sum(c["status"] == "straggler" for c in clients if c["round"] == r["round"])
        assert r["stragglers"] == dropped and r["participated"] == sum(
            c["status"] == "trained" for c in clients if c["round"] == r["round"])
        assert r["device_time"] == (30.0 if dropped else max(c["device_time"] for c in trained
                                                             if c["round"] == r["round"]))
    assert rounds[1]["device_wall_time"] == pytest.approx(rounds[0]["device_time"] + rounds[1]["device_time"])


def test_a_deadline_every_client_meets_leaves_the_round_as_long_as_its_slowest(tmp_path, quiet):
    cfg = tiny_suite(rounds=1, deadline_s=1e6, fleet={"high_mb": 20.0, "low_mb": 10.0, "gflops": [0.001, 50.0]})
    run = run_suite(cfg, tmp_path, log=quiet) / "fedavg-seed0"
    (record,), clients = lines(run / "rounds.jsonl"), lines(run / "clients.jsonl")
    times = [c["device_time"] for c in clients if c["status"] == "trained"]
    assert record["stragglers"] == 0 and len(times) == record["participated"] > 0
    assert record["device_time"] == max(times) < 1e6


def test_a_device_that_fits_no_task_records_the_smallest_one(tmp_path, quiet):
    cfg = tiny_suite(rounds=1, fleet={"low_mb": 0.001, "high_mb": 0.002}, methods=[{"method": "heterofl"}])
    clients = lines(run_suite(cfg, tmp_path, log=quiet) / "heterofl-seed0" / "clients.jsonl")
    assert all(c["status"] == "excluded" and c["task"] == "width=0.0625" and c["estimate"]["peak"] > c["budget"]
               for c in clients)
