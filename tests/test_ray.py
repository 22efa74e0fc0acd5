"""The Ray executor (docs/ray.md) on a local 2-CPU Ray: the same records as the local executor,
memory measured per client on reused workers, and workers killed mid-task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_suite

from harness.cli import main
from harness.data import load_data
from harness.engine import ClientJob, Run, plan_round, run_suite, suite_estimator, train_client
from harness.methods import ClientResult
from harness.records import CHECKPOINT, read_jsonl

from helpers import records, without_times

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
TESTS = Path(__file__).resolve().parent

quiet = lambda _: None  # noqa: E731


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One 2-CPU Ray for the module; workers find the tests' own method through the environment."""
    import ray_faults  # noqa: F401  registers die-once here, as FL_HARNESS_PLUGINS does on the workers

    env = {"FL_HARNESS_PLUGINS": "ray_faults", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", runtime_env={"env_vars": env})
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Ray gives each run and worker one thread (``num_cpus = 1``); the local reference runs alike,
    so that sums reduce in the same order and records compare exactly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def same_records(a: Path, b: Path) -> None:
    for name in ("rounds.jsonl", "clients.jsonl"):
        assert without_times(read_jsonl(a / name)) == without_times(read_jsonl(b / name)), name
    wa, wb = (torch.load(f / CHECKPOINT, weights_only=False)["method"] for f in (a, b))
    for key in wa:
        if isinstance(wa[key], dict):
            for name, tensor in wa[key].items():
                if isinstance(tensor, torch.Tensor):
                    assert torch.equal(tensor, wb[key][name]), (key, name)


SUITE = dict(methods=[{"method": "fedavg"}, {"method": "neulite"}], seeds=[0, 1], rounds=3)


@pytest.mark.parametrize("how", [{"executor": "ray"}, {"ray": {"client_workers": 2}},
                                 {"executor": "ray", "ray": {"client_workers": 1}}],
                         ids=["runs", "clients", "both"])
def test_ray_gives_the_local_records(tmp_path, one_thread, how):
    local = run_suite(tiny_suite(**SUITE), tmp_path / "local", log=quiet)
    spread = run_suite(tiny_suite(**SUITE, **how), tmp_path / "ray", log=quiet)
    assert sorted(p.name for p in spread.iterdir() if p.is_dir()) == \
        ["fedavg-seed0", "fedavg-seed1", "neulite-seed0", "neulite-seed1"]
    for run in ("fedavg-seed0", "fedavg-seed1", "neulite-seed0", "neulite-seed1"):
        same_records(local / run, spread / run)


def test_executor_ray_from_the_command_line(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "cli"\nrounds = 2\nclients_per_round = 2\ndevice = "cpu"\nseeds = [0, 1]\n'
                     '[data]\nname = "synthetic"\nsynthetic_samples = 200\npartition = "iid"\n'
                     '[model]\nname = "cnn"\nwidth = 0.25\n[fleet]\ndevices = 4\n[[methods]]\nmethod = "fedavg"\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 0
    out = capsys.readouterr().out
    assert "executor ray" in out and "(2/2 runs" in out
    suite_json = (tmp_path / "out" / "cli" / "suite.json").read_text()
    assert '"executor": "ray"' in suite_json
    for seed in (0, 1):
        assert len(read_jsonl(tmp_path / "out" / "cli" / f"fedavg-seed{seed}" / "rounds.jsonl")) == 2


def client(cfg, data, rnd: int = 1) -> tuple[Run, ClientJob]:
    """A run of ``cfg`` and the job of its first trained client in round ``rnd``."""
    device = torch.device("cpu")
    run = Run(cfg, cfg.methods[0], 0, data, device, Path("unused"), quiet, suite_estimator(cfg, data, device))
    candidate = plan_round(run.method, rnd, run.fleet)[0]
    return run, run.client_job(rnd, candidate)


def test_a_reused_worker_measures_each_client_on_its_own(one_thread):
    """A large client (a full-width ResNet-18: 134 MB of weights, gradients and momentum) then a
    small one on the same worker: the small one's tensor peak is exactly what a fresh process
    measures, and its RSS rise is its own, not the large one's."""
    from harness.ray_executor import RayClients

    small_cfg = tiny_suite(ray={"client_workers": 1}, fleet={"devices": 1}, clients_per_round=1)
    big_cfg = tiny_suite(ray={"client_workers": 1}, fleet={"devices": 1}, clients_per_round=1,
                         model={"name": "resnet18", "width": 1.0})
    data = load_data(small_cfg.data)
    (big_run, big_job), (small_run, small_job) = client(big_cfg, data), client(small_cfg, data)
    pool = RayClients(small_cfg, data, quiet)
    try:
        big = pool.train(big_run.method, [big_job])[0]
        small = pool.train(small_run.method, [small_job])[0]
        pids = {ray.get(w.pid.remote()) for w in pool.workers}
    finally:
        pool.close()
    alone = train_client(small_cfg, data, small_run.method, small_job, torch.device("cpu"))
    assert len(pids) == 1 and pids != {os.getpid()}
    assert isinstance(big, ClientResult) and isinstance(small, ClientResult)
    assert small.local.memory["tensor"] == alone.local.memory["tensor"]
    assert big.local.memory["tensor"]["peak"] > 100 * small.local.memory["tensor"]["peak"]
    big_rss, small_rss = big.local.memory["rss"]["delta"], small.local.memory["rss"]["delta"]
    assert big_rss > 100 * 2**20  # the large client's weights, gradients and momentum
    assert small_rss < big_rss / 10  # reset per client: the large one's high-water mark is gone
    assert small.local.state.keys() == alone.local.state.keys()
    assert all(torch.equal(small.local.state[k], alone.local.state[k]) for k in alone.local.state)


def die_once(tmp_path: Path, **params) -> dict:
    return {"method": "die-once", "marker": str(tmp_path / "died"), **params}


@pytest.mark.parametrize("retries", [0, 1])
def test_a_client_whose_worker_dies_is_retried_or_recorded_failed(tmp_path, one_thread, retries):
    over = dict(methods=[die_once(tmp_path, client_device=2, round=2)], rounds=3, fleet={"devices": 4},
                clients_per_round=4)
    killed = run_suite(tiny_suite(**over, ray={"client_workers": 2, "client_retries": retries}), tmp_path / "k",
                       log=quiet) / "die-once-seed0"
    assert (tmp_path / "died").exists()
    straight = run_suite(tiny_suite(**over), tmp_path / "s", log=quiet) / "die-once-seed0"  # it died already
    (rounds, clients), (want_rounds, want_clients) = records(killed), records(straight)
    if retries:
        same_records(killed, straight)
        return
    failed = [c for c in clients if c["status"] == "failed"]
    assert [(c["round"], c["device"]) for c in failed] == [(2, 2)]
    assert "worker died 1 time(s)" in failed[0]["reason"]
    assert [r["participated"] for r in rounds] == [4, 3, 4]
    assert without_times(rounds[:1]) == without_times(want_rounds[:1])  # the round before is untouched
    assert len(clients) == len(want_clients) == 3 * 4


def test_a_run_whose_worker_dies_resumes_from_its_last_complete_round(tmp_path, one_thread, capsys):
    over = dict(methods=[die_once(tmp_path, aggregate_round=2)], rounds=4)
    killed = run_suite(tiny_suite(**over, executor="ray"), tmp_path / "k") / "die-once-seed0"
    assert (tmp_path / "died").exists()
    assert "resuming after round 1" in capsys.readouterr().out
    straight = run_suite(tiny_suite(**over), tmp_path / "s", log=quiet) / "die-once-seed0"
    rounds, _ = records(killed)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]  # round 2, cut short, redone once
    same_records(killed, straight)

