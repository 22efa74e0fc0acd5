"""The Ray executor (docs/ray.md) on a local 2-CPU Ray: the same records as the local executor,
memory measured per client on reused workers, and workers killed mid-task."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_suite

from harness.cli import main
from harness.clients import ClientJob, train_client
from harness.config import ConfigError, RayConfig
from harness.data import load_data
from harness.engine import Run, RunLostError, check_ray, run_suite, suite_estimator
from harness.methods import ClientResult
from harness.planning import plan_round
from harness.ray_executor import run_slots
from harness.records import CHECKPOINT, read_jsonl

from helpers import records, without_times

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

TESTS = Path(__file__).resolve().parent

quiet = lambda _: None  # noqa: E731


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One 2-CPU Ray for the module; workers find the tests' own method through the environment."""
    import ray_faults  # noqa: F401  registers its methods here, as FL_HARNESS_PLUGINS does on the workers

    ray.shutdown()  # a Ray started by an earlier test, without this module's environment
    env = {"FL_HARNESS_PLUGINS": "ray_faults", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    ray.init(num_cpus=2, num_gpus=torch.cuda.device_count(), include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": env})
    with pytest.MonkeyPatch.context() as patch:  # the driver's code is the workers' (their source hash)
        patch.setenv("FL_HARNESS_PLUGINS", "ray_faults")
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


def assert_same(a, b, where: str = "") -> None:
    """Equal to the bit: tensors by value, containers entry by entry."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def same_records(a: Path, b: Path) -> None:
    """The same rounds, clients (but for wall times and RSS) and final method state."""
    for name in ("rounds.jsonl", "clients.jsonl"):
        assert without_times(read_jsonl(a / name)) == without_times(read_jsonl(b / name)), name
    checkpoints = [torch.load(f / CHECKPOINT, weights_only=False) for f in (a, b)]
    assert_same(*(c["method"] for c in checkpoints), "method")


SUITE = dict(methods=[{"method": "fedavg"}, {"method": "neulite"}], seeds=[0, 1], rounds=3)


@pytest.mark.parametrize("how", [{"executor": "ray"}, {"ray": {"client_workers": 2}},
                                 pytest.param({"executor": "ray", "ray": {"client_workers": 1}},
                                              marks=pytest.mark.slow)],  # each half is in the default run
                         ids=["runs", "clients", "both"])
def test_ray_gives_the_local_records(tmp_path, one_thread, how):
    local = run_suite(tiny_suite(**SUITE), tmp_path / "local", log=quiet)
    spread = run_suite(tiny_suite(**SUITE, **how), tmp_path / "ray", log=quiet)
    assert sorted(p.name for p in spread.iterdir() if p.is_dir()) == \
        ["fedavg-seed0", "fedavg-seed1", "neulite-seed0", "neulite-seed1"]
    for run in ("fedavg-seed0", "fedavg-seed1", "neulite-seed0", "neulite-seed1"):
        same_records(local / run, spread / run)


def test_runs_on_ray_share_their_estimates(tmp_path):
    """A task's estimate does not depend on the seed: on Ray, the runs of a suite compute each one
    once between them (a board the driver starts), as the local executor's runs do."""
    def estimates(executor: str) -> list[str]:
        log = tmp_path / f"{executor}.log"
        log.touch()
        cpus = int(ray.cluster_resources()["CPU"])  # one run at a time (runs at once: the board test below)
        cfg = tiny_suite(methods=[{"method": "counted", "log": str(log)}], seeds=[0, 1, 2], rounds=2,
                         executor=executor, ray={"num_cpus": cpus})
        run_suite(cfg, tmp_path / executor, log=quiet)
        return log.read_text().splitlines()

    local = estimates("local")
    assert local and estimates("ray") == local


def test_the_cost_board_lets_one_run_compute_each_estimate(monkeypatch):
    import harness.ray_executor as executor

    board = executor.CostBoard({"known": "cost"})
    assert board.claim("known") == "cost"
    assert board.claim("new") is True and board.claim("new") is False  # the first computes, the others wait
    board.put("new", "computed")
    assert board.claim("new") == "computed"
    assert board.claim("failed") is True
    board.release("failed")  # its estimate raised: the next asker computes it
    assert board.claim("failed") is True and board.claim("failed") is False
    monkeypatch.setattr(executor, "CLAIM_LEASE_S", 0.0)  # a claim its dead run never posted
    assert board.claim("failed") is True


def test_runs_going_at_once_wait_for_an_estimate_being_computed(tmp_path):
    """Three seeds, one CPU each, on a 2-CPU Ray (two going at once): each estimate is still computed once."""
    log = tmp_path / "ray.log"
    log.touch()
    local = tmp_path / "local.log"
    local.touch()
    methods = lambda path: [{"method": "counted", "log": str(path)}]  # noqa: E731
    run_suite(tiny_suite(methods=methods(local), seeds=[0, 1, 2], rounds=2), tmp_path / "l", log=quiet)
    run_suite(tiny_suite(methods=methods(log), seeds=[0, 1, 2], rounds=2, executor="ray"), tmp_path / "r",
              log=quiet)
    assert log.read_text() == local.read_text() != ""


def test_no_more_runs_go_at_once_than_the_cluster_has_cpus_for(tmp_path):
    """Runs wait on the board for an estimate another run computes (slowly here); a task blocked in
    ``ray.get`` lends its CPU back to Ray, so the driver itself holds back the runs that do not fit
    (2 CPUs, one each: two at a time, never three; without the hold-back a third one starts)."""
    log = tmp_path / "spans.log"
    method = {"method": "spanned", "log": str(log), "slow_estimate_s": 5.0, "driver_pid": os.getpid()}
    run_suite(tiny_suite(methods=[method], seeds=[0, 1, 2, 3], rounds=2, executor="ray"), tmp_path, log=quiet)
    lines = map(str.split, log.read_text().splitlines())
    events = sorted((float(t), +1 if what == "start" else -1) for what, t in lines)
    going = list(itertools.accumulate(step for _, step in events))
    assert len(events) == 8 and max(going) == 2


def test_run_slots_count_whole_runs_node_by_node():
    assert run_slots([{"CPU": 8.0, "GPU": 1.0}], RayConfig(num_cpus=2, num_gpus=0.5)) == 2
    assert run_slots([{"CPU": 8.0}], RayConfig(num_cpus=1, client_workers=2, client_num_cpus=1)) == 2
    assert run_slots([{"CPU": 3.0}, {"CPU": 3.0}], RayConfig(num_cpus=2)) == 2  # not 6 / 2
    assert run_slots([{"CPU": 4.0, "GPU": 0.9}], RayConfig(num_gpus=0.3)) == 3  # 0.9 / 0.3 in floats
    assert run_slots([{"CPU": 1.0}], RayConfig(num_cpus=2)) == 1  # a run bigger than the cluster still goes


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


def client(cfg, data, device: torch.device) -> tuple[Run, ClientJob]:
    """A run of ``cfg`` and the job of its first client in round 1."""
    run = Run(cfg, cfg.methods[0], 0, data, device, Path("unused"), quiet, suite_estimator(cfg, data, device))
    return run, run.client_job(1, plan_round(run.method, 1, run.fleet)[0], measure=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_a_reused_worker_measures_each_client_on_its_own(one_thread, device):
    """A client that holds 256 MB for a moment, then a plain one on the same worker: the plain
    one's peaks are its own in every source (the large one's high-water marks are reset), and
    equal to what this process measures for it."""
    from harness.ray_executor import RayClients

    over = dict(fleet={"devices": 1}, clients_per_round=1, device=device,
                ray={"client_workers": 1, "client_num_gpus": 1.0 if device == "cuda" else 0.0})
    plain_cfg, hog_cfg = tiny_suite(**over), tiny_suite(**over, methods=[{"method": "hog"}])
    data, where = load_data(plain_cfg.data), torch.device(device)
    (hog_run, hog_job), (plain_run, plain_job) = client(hog_cfg, data, where), client(plain_cfg, data, where)
    pool = RayClients(plain_cfg, data, where, quiet)
    try:
        pool.train(plain_run.method, [plain_job])  # the worker's first client pays its one-time set-up
        hog = pool.train(hog_run.method, [hog_job])[0]
        plain = pool.train(plain_run.method, [plain_job])[0]
        pids = {ray.get(w.pid.remote()) for w in pool.workers}
    finally:
        pool.close()
    alone = train_client(plain_cfg, data, plain_run.method, plain_job, where)
    assert len(pids) == 1 and pids != {os.getpid()}
    assert isinstance(hog, ClientResult) and isinstance(plain, ClientResult)
    hogged = 256 * 2**20
    assert hog.local.memory["tensor"]["peak"] > hogged > 100 * plain.local.memory["tensor"]["peak"]
    assert plain.local.memory["tensor"] == alone.local.memory["tensor"]
    assert hog.local.memory["rss"]["delta"] > 0.9 * hogged
    # reset, not kept (kept, it would be at least the hog's; the margin leaves room for the heap to grow)
    assert plain.local.memory["rss"]["peak"] < hog.local.memory["rss"]["peak"] - 0.5 * hogged
    if device == "cuda":
        assert hog.local.memory["cuda"]["task_peak"] > hogged
        assert plain.local.memory["cuda"]["task_peak"] == alone.local.memory["cuda"]["task_peak"]
    assert_same(plain.local.state, alone.local.state)


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


def test_a_run_whose_worker_dies_resumes_from_its_last_complete_round(tmp_path, one_thread):
    over = dict(methods=[die_once(tmp_path, aggregate_round=2)], rounds=4)
    killed = run_suite(tiny_suite(**over, executor="ray"), tmp_path / "k", log=quiet) / "die-once-seed0"
    assert (tmp_path / "died").exists()
    straight = run_suite(tiny_suite(**over), tmp_path / "s", log=quiet) / "die-once-seed0"
    rounds, _ = records(killed)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]  # round 2, cut short, redone once
    same_records(killed, straight)


def test_a_run_lost_for_good_keeps_its_rounds_and_resumes(tmp_path, one_thread):
    """No retries left: the other runs finish, the lost one's complete rounds stay, the suite
    stops with one line, and ``--resume`` finishes it as if nothing had happened."""
    over = dict(methods=[die_once(tmp_path, aggregate_round=2)], rounds=3, seeds=[0, 1])
    cfg = tiny_suite(**over, executor="ray", ray={"run_retries": 0})
    with pytest.raises(RunLostError, match="after 0 retries; every complete round is recorded"):
        run_suite(cfg, tmp_path / "k", log=quiet)
    folder = tmp_path / "k" / "tiny"
    lengths = sorted(len(read_jsonl(folder / f"die-once-seed{s}" / "rounds.jsonl")) for s in (0, 1))
    assert lengths == [1, 3]  # one seed died in round 2 (the marker is shared); the other finished
    run_suite(cfg, tmp_path / "k", resume=True, log=quiet)
    straight = run_suite(tiny_suite(**over), tmp_path / "s", log=quiet)
    for seed in (0, 1):
        same_records(folder / f"die-once-seed{seed}", straight / f"die-once-seed{seed}")


def test_ray_is_checked_before_anything_is_written(tmp_path, monkeypatch):
    from harness import engine

    with pytest.raises(ConfigError, match=r"ray\.num_gpus is 0"):
        check_ray(tiny_suite(executor="ray"), torch.device("cuda"))
    with pytest.raises(ConfigError, match=r"ray\.client_num_gpus is 0"):
        check_ray(tiny_suite(ray={"client_workers": 2, "num_gpus": 1.0}), torch.device("cuda"))
    check_ray(tiny_suite(executor="ray", ray={"num_gpus": 0.25}), torch.device("cuda"))
    monkeypatch.setattr(engine, "find_spec", lambda name: None)  # as without the extra
    with pytest.raises(ConfigError, match=r"pip install 'fl-memory-harness\[ray\]'"):
        run_suite(tiny_suite(executor="ray"), tmp_path, log=quiet)
    assert not (tmp_path / "tiny").exists()


def test_the_local_executor_never_imports_ray(tmp_path):
    code = ("import sys; from conftest import tiny_suite; from harness.engine import run_suite; "
            f"run_suite(tiny_suite(rounds=1), {str(tmp_path)!r}, log=lambda _: None); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=TESTS, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])})
    assert done.returncode == 0, done.stderr


def test_client_workers_the_cluster_cannot_hold_are_one_line_not_a_hang(tmp_path, capsys):
    """3 one-CPU workers on this module's 2-CPU Ray once waited forever without a word."""
    from harness.ray_executor import check_client_workers

    check_client_workers([{"CPU": 2.0}], RayConfig(client_workers=2))
    check_client_workers([{"CPU": 1.0}, {"CPU": 1.0}], RayConfig(client_workers=2))
    with pytest.raises(ConfigError, match=r"ray.client_workers = 3 workers of 1 CPUs each do not fit the cluster "
                                          r"\(2 CPUs, 0 GPUs\)"):
        check_client_workers([{"CPU": 2.0, "GPU": 0.0}], RayConfig(client_workers=3))
    with pytest.raises(ConfigError, match=r"of 0\.5 GPUs each"):
        check_client_workers([{"CPU": 8.0, "GPU": 1.0}], RayConfig(client_workers=3, client_num_gpus=0.5))
    with pytest.raises(ConfigError, match="client_workers = 3"):
        run_suite(tiny_suite(rounds=1, ray={"client_workers": 3}), tmp_path, log=quiet)
