"""Each width/depth baseline end to end through the engine: what every client trained, and why not."""

from __future__ import annotations

import json

import pytest

import baselines  # noqa: F401  (registration)
from harness.engine import run_suite
from harness.suites import suite_from_dict

METHODS = ("heterofl", "fedrolex", "fjord", "depthfl")


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    trace = folder / "fleet.csv"  # one device fits nothing, the others fit different sizes
    trace.write_text("".join(f"{i},{mb}\n" for i, mb in enumerate([0.05, 0.3, 0.6, 1.2, 4.0, 4.0])))
    cfg = suite_from_dict({
        "name": "bl", "rounds": 2, "clients_per_round": 4, "batch_size": 8, "seeds": [0], "device": "cpu",
        "data": {"name": "synthetic", "synthetic_samples": 240, "partition": "iid"},
        "model": {"name": "cnn"},
        "fleet": {"devices": 6, "distribution": "trace", "trace": str(trace)},
        "measure": {"rss": False, "clients": "all"},  # every client's measurement checked against its estimate
        "methods": [*({"method": m} for m in METHODS if m != "fedrolex"),
                    # evaluated and averaged as HeteroFL is, so that only the window differs: see below
                    {"method": "fedrolex", "global_bn_stats": True, "averaging": "plain"}],
    })
    return run_suite(cfg, folder, log=lambda _: None)


@pytest.mark.parametrize("label", METHODS)
def test_records_show_each_clients_size_and_exclusions(suite, label):
    clients = lines(suite / f"{label}-seed0" / "clients.jsonl")
    rounds = lines(suite / f"{label}-seed0" / "rounds.jsonl")
    kind = "depth" if label == "depthfl" else "width"
    trained = [c for c in clients if c["status"] == "trained"]
    assert trained and len(rounds) == 2 and all(r["accuracy"] is not None for r in rounds)
    for c in trained:
        assert c[kind] is not None and c["estimate"]["peak"] <= c["budget"]
        assert c["memory"]["tensor"]["peak"] <= c["estimate"]["peak"]
        if label != "fjord":  # FjORD's sampled p may stay under the estimated peak p
            assert c["memory"]["tensor"]["peak"] == c["estimate"]["peak"]
    sizes = {c[kind] for c in clients if c["status"] != "excluded"}
    assert len(sizes) > 1  # budgets differ, so sizes differ
    excluded = [c for c in clients if c["status"] == "excluded"]
    smallest = min(c["estimate"]["peak"] for c in clients if c["estimate"])  # the admission task is recorded
    assert excluded and all("budget" in c["reason"] and c["estimate"]["peak"] == smallest > c["budget"]
                            for c in excluded)


def test_depthfl_evaluates_deepest_and_ensemble(suite):
    rounds = lines(suite / "depthfl-seed0" / "rounds.jsonl")
    assert set(rounds[-1]["evals"]) == {"deepest", "ensemble"}


def test_fedrolex_differs_from_heterofl_once_the_window_rolls(suite):
    loss = {m: [r["loss"] for r in lines(suite / f"{m}-seed0" / "rounds.jsonl")]
            for m in ("heterofl", "fedrolex")}
    assert loss["heterofl"][0] == loss["fedrolex"][0]  # round 1: both windows start at channel 0
    assert loss["heterofl"][1] != loss["fedrolex"][1]
