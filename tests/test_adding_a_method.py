"""The worked example of docs/adding-a-method.md is baselines/fedprox.py, and it joins as a plugin."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.engine import run_suite
from harness.methods import METHODS
from harness.plugins import load_plugins
from harness.suites import suite_from_dict

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding-a-method.md"


def example() -> str:
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


def test_worked_example_is_the_shipped_fedprox():
    assert example() == (ROOT / "baselines" / "fedprox.py").read_text()


def test_worked_example_registers_as_a_plugin_and_runs(tmp_path, monkeypatch):
    code = example().replace('@register_method("fedprox")', '@register_method("my_fedprox")')
    (tmp_path / "my_methods_doc_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FL_HARNESS_PLUGINS", "my_methods_doc_example")
    load_plugins()
    assert "my_fedprox" in METHODS
    cfg = suite_from_dict({
        "name": "doc", "rounds": 2, "clients_per_round": 3, "batch_size": 16, "device": "cpu",
        "data": {"name": "synthetic", "synthetic_samples": 200},
        "fleet": {"devices": 4, "distribution": "uniform", "low_mb": 0.5, "high_mb": 4.0},
        "measure": {"rss": False, "clients": "all"},
        "methods": [{"method": "my_fedprox", "mu": 0.2}],
    })
    folder = run_suite(cfg, tmp_path / "runs", log=lambda _: None)
    run = folder / "my_fedprox-seed0"
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    clients = [json.loads(line) for line in (run / "clients.jsonl").read_text().splitlines()]
    assert len(rounds) == 2 and rounds[-1]["accuracy"] is not None and rounds[-1]["participated"] >= 1
    assert any(c["status"] == "excluded" and "budget" in c["reason"] for c in clients)
    trained = [c for c in clients if c["status"] == "trained"]
    assert trained and all(0 < c["memory"]["tensor"]["state"] == c["estimate"]["state"] for c in trained)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method_params"] == {"weighted": True, "mu": 0.2}
