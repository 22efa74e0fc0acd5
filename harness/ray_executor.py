"""Ray (docs/ray.md): a suite's runs as Ray tasks, and a round's clients on worker actors.

Ray is an optional extra (``pip install '.[ray]'``) and is imported only when a suite asks for it.
Records do not depend on where anything ran: a run's folder is written by the task that runs it,
exactly as the local executor writes it, and a client's result depends only on its own seed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from typing import Any

import torch

from harness import interrupts
from harness.clients import CLIENT_TRAINERS, ClientFailure, ClientJob, log_if_slow, train_client
from harness.config import ConfigError, RayConfig, SuiteConfig
from harness.data import DataBundle
from harness.engine import EXECUTORS, Run, RunJob, RunLostError, Shared, suite_estimator
from harness.estimate import TaskCost
from harness.methods import ClientResult, Method, TaskError
from harness.plugins import load_plugins
from harness.progress import Log, SuiteProgress
from harness.seeds import deterministic_kernels

FORWARDED_ENV = ("FL_HARNESS_PLUGINS", "PYTHONPATH")  # a user's own methods must load on every worker


def connect(cfg: RayConfig) -> Any:
    """Ray, joined to ``cfg.address`` or started on this machine; a Ray already started by this
    process (a test's, a notebook's) is used as it is. (``check_ray`` has found Ray installed.)"""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every run's lines, not one per kind
    if not sys.stdout.isatty():  # the workers' lines Ray forwards: no colour codes in a log file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    import ray

    if not ray.is_initialized():
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        ray.init(address=cfg.address or None, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": env} if env else None)
        interrupts.take_back()  # Ray's start-up installs its own SIGTERM handler, whose exit is lost
    return ray


def use_threads(num_cpus: float) -> None:
    """As many torch threads as CPUs reserved (at least one, by the config): no more, or the runs
    beside it are oversubscribed."""
    torch.set_num_threads(int(num_cpus))


def cause(err: Any) -> BaseException:
    """The exception a Ray task raised, as it was raised (Ray wraps it in a ``RayTaskError``)."""
    return err.cause if isinstance(getattr(err, "cause", None), BaseException) else err


def first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


CLAIM_LEASE_S = 120.0  # a claim not posted by then (its run's worker died) goes to the next asker


class CostBoard:
    """A Ray actor holding the suite's estimates, so that each is computed once, not once per run
    (they depend on the task, never on the seed: the runs share them as the local executor's do).
    The first run to ask for a missing one computes it; the others wait for it."""

    def __init__(self, costs: dict[str, TaskCost | TaskError]) -> None:
        self.costs = costs
        self.claims: dict[str, float] = {}  # key -> when it was claimed

    def claim(self, key: str) -> TaskCost | TaskError | bool:
        """The estimate if known; else True to the asker that is to compute and post it (the first,
        or any once a claim has gone unposted for ``CLAIM_LEASE_S``), False to the others (they
        ask again)."""
        if key in self.costs:
            return self.costs[key]
        now = time.monotonic()
        if now - self.claims.get(key, -math.inf) < CLAIM_LEASE_S:
            return False
        self.claims[key] = now
        return True

    def put(self, key: str, cost: TaskCost | TaskError) -> None:
        self.costs[key] = cost

    def release(self, key: str) -> None:
        self.claims.pop(key, None)


class BoardStore:
    """``CostStore`` on a ``CostBoard``: asked only for what this run has not estimated itself."""

    def __init__(self, board: Any) -> None:
        self.board = board

    def get(self, key: str) -> TaskCost | TaskError | None:
        import ray

        while (answer := ray.get(self.board.claim.remote(key))) is False:
            time.sleep(0.05)
        return None if answer is True else answer

    def put(self, key: str, cost: TaskCost | TaskError) -> None:
        import ray

        ray.get(self.board.put.remote(key, cost))  # on the board before this run can end

    def release(self, key: str) -> None:
        import ray

        ray.get(self.board.release.remote(key))


def execute_run(cfg: SuiteConfig, job: RunJob, data: DataBundle, device: torch.device, board: Any,
                verbose: bool) -> None:
    """One run, in a Ray worker, on the device the driver resolved (a GPU Ray assigned it). The
    driver checked the run before submitting it, so records found here are its own, left by a
    worker that died: it resumes from their last complete round."""
    use_threads(cfg.ray.num_cpus)
    deterministic_kernels()
    load_plugins()  # a fresh worker process: the built-in methods and FL_HARNESS_PLUGINS
    estimator = suite_estimator(cfg, data, device, BoardStore(board))
    Run(cfg, job.entry, job.seed, data, device, job.folder, _print, estimator, verbose, job.tensorboard,
        job.allow_code_change).execute(True)


def _print(line: str) -> None:
    print(line, flush=True)  # Ray forwards a worker's output to the driver, prefixed with the task


def run_slots(nodes: list[dict[str, float]], cfg: RayConfig) -> int:
    """How many runs the cluster's nodes (their resources) hold at once, each with its client
    workers. The driver submits no more than that: a run blocked in ``ray.get`` (waiting on the
    board) lends its CPUs back to Ray, which would start a queued run on them and put two runs on
    one core from then on. (On an autoscaling cluster, queued runs then do not ask for nodes.)"""
    need = {"CPU": cfg.num_cpus + cfg.client_workers * cfg.client_num_cpus,
            "GPU": cfg.num_gpus + cfg.client_workers * cfg.client_num_gpus}
    fits = (min(math.floor(node.get(k, 0.0) / v + 1e-6) for k, v in need.items() if v > 0) for node in nodes)
    return max(1, sum(fits))


def cluster_text(nodes: list[dict[str, float]]) -> str:
    return "; ".join(f"{node.get('CPU', 0):g} CPUs, {node.get('GPU', 0):g} GPUs" for node in nodes) or "no node"


def check_client_workers(nodes: list[dict[str, float]], cfg: RayConfig) -> None:
    """Client workers the cluster cannot start all at once would leave a round waiting forever (3
    workers on 2 cores hung without a word): refused, naming what the cluster has."""
    for key, each in (("CPU", cfg.client_num_cpus), ("GPU", cfg.client_num_gpus)):
        if each > 0 and sum(math.floor(node.get(key, 0.0) / each + 1e-6) for node in nodes) < cfg.client_workers:
            raise ConfigError(f"ray.client_workers = {cfg.client_workers} workers of {each:g} {key}s each do not fit "
                              f"the cluster ({cluster_text(nodes)}): lower ray.client_workers, then continue with "
                              "--resume")


@EXECUTORS.register("ray")
def run_on_ray(cfg: SuiteConfig, jobs: list[RunJob], shared: Shared, resume: bool, progress: SuiteProgress) -> None:
    """The suite's runs as Ray tasks, ``ray.num_cpus`` and ``ray.num_gpus`` each. A run whose worker
    dies is resumed by Ray (``ray.run_retries``); a run that fails (diverged, bad records) does not
    stop the others, and the first such error is raised once all have ended. The runs write their
    own progress lines (Ray forwards those for the console here); ``progress`` counts each run's end."""
    ray = connect(cfg.ray)
    task = ray.remote(execute_run).options(num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus,
                                           max_retries=cfg.ray.run_retries, retry_exceptions=False)
    data = ray.put(shared.data)
    board = ray.remote(CostBoard).options(num_cpus=0).remote(shared.estimator.costs)
    # seed by seed: the runs going at once are other methods', and a method's later seeds find
    # its estimates on the board
    waiting = deque(sorted(jobs, key=lambda j: j.seed))
    pending: dict[Any, RunJob] = {}

    def submit() -> None:
        slots = run_slots([node["Resources"] for node in ray.nodes() if node["Alive"]], cfg.ray)
        while waiting and len(pending) < slots:
            job = waiting.popleft()
            pending[task.remote(cfg, job, data, shared.device, board, shared.verbose)] = job

    errors: list[BaseException] = []
    try:
        submit()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                ray.get(done[0])
                progress.run_done(f"[{job.name}] finished")
            except ray.exceptions.RayTaskError as err:
                progress.run_done(f"[{job.name}] failed: {first_line(cause(err))}")
                errors.append(cause(err))
            except ray.exceptions.RayError as err:  # the worker died more often than run_retries allows
                progress.run_done(f"[{job.name}] lost: {first_line(err)}")
                errors.append(RunLostError(f"{job.name}: lost with its worker ({first_line(err)}) after "
                                           f"{cfg.ray.run_retries} retries; every complete round is recorded, "
                                           "continue with --resume"))
            submit()
    except BaseException:  # interrupted: stop the runs still going; their complete rounds stay recorded
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    if errors:
        raise errors[0]


class ClientWorker:
    """A Ray actor that keeps the suite's data loaded and trains clients; the method (the global
    state) arrives once per round through the object store and is kept until the next one."""

    def __init__(self, cfg: SuiteConfig, data: DataBundle, device: torch.device) -> None:
        use_threads(cfg.ray.client_num_cpus)
        deterministic_kernels()
        self.cfg, self.data, self.device = cfg, data, device
        self._method_key = ""
        self._method: Method | None = None

    def train(self, method_ref: list[Any], job: ClientJob) -> ClientResult:
        # the reference comes wrapped in a list so Ray hands it over unresolved: fetched once a round
        if method_ref[0].hex() != self._method_key:
            import ray

            self._method, self._method_key = ray.get(method_ref[0]), method_ref[0].hex()
        return train_client(self.cfg, self.data, self._method, job, self.device)

    def pid(self) -> int:
        """The worker's process (started: its data and code are loaded)."""
        return os.getpid()


@CLIENT_TRAINERS.register("ray")
class RayClients:
    """Trains a round's clients on ``ray.client_workers`` actors, one client per actor at a time. A
    client whose actor died is tried again on a fresh one (``ray.client_retries``), then recorded
    as failed; the round goes on with the others."""

    def __init__(self, cfg: SuiteConfig, data: DataBundle, device: torch.device, log: Log) -> None:
        self.ray = connect(cfg.ray)
        self.cfg, self.device, self.log = cfg, device, log
        check_client_workers([node["Resources"] for node in self.ray.nodes() if node["Alive"]], cfg.ray)
        self.actor = self.ray.remote(ClientWorker).options(num_cpus=cfg.ray.client_num_cpus,
                                                          num_gpus=cfg.ray.client_num_gpus)
        self.data_ref = self.ray.put(data)  # held for the pool's life: a replacement actor reads it too
        self.workers = [self.spawn() for _ in range(cfg.ray.client_workers)]
        try:  # a worker that cannot start (a plugin that does not import) is an error, not a death per client
            self.ray.get([worker.pid.remote() for worker in self.workers])
        except self.ray.exceptions.RayError as err:
            self.close()
            raise cause(err) from None

    def spawn(self) -> Any:
        return self.actor.remote(self.cfg, self.data_ref, self.device)

    def train(self, method: Method, jobs: list[ClientJob]) -> list[ClientResult | ClientFailure]:
        method_ref = [self.ray.put(method)]
        results: list[ClientResult | ClientFailure | None] = [None] * len(jobs)
        tries, done_count = [0] * len(jobs), 0
        queue, idle, running = deque(range(len(jobs))), deque(self.workers), {}
        while queue or running:
            while queue and idle:
                i, worker = queue.popleft(), idle.popleft()
                running[worker.train.remote(method_ref, jobs[i])] = (i, worker)
            done, _ = self.ray.wait(list(running), num_returns=1)
            i, worker = running.pop(done[0])
            try:
                result = self.ray.get(done[0])
            except self.ray.exceptions.RayTaskError as err:  # the client's own error: the run stops
                raise cause(err) from None
            except self.ray.exceptions.RayError as err:  # the worker died (killed, out of memory)
                worker = self.replace(worker)
                tries[i] += 1
                if tries[i] <= self.cfg.ray.client_retries:
                    self.log(f"{jobs[i].context}: its worker died ({type(err).__name__}); trying again")
                    queue.append(i)
                else:
                    results[i] = ClientFailure(f"worker died {tries[i]} time(s): {first_line(err)}")
            else:
                results[i], done_count = result, done_count + 1
                log_if_slow(self.log, jobs[i], result, done_count, len(jobs))
            idle.append(worker)
        return results  # type: ignore[return-value]

    def replace(self, dead: Any) -> Any:
        """A fresh actor in the dead one's place (Ray's own restart would fail the calls already queued)."""
        self.ray.kill(dead)
        fresh = self.spawn()
        self.workers[self.workers.index(dead)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)
