"""The round loop: plan, gate by memory, select, train locally, aggregate, evaluate, record."""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch

from harness import interrupts
from harness.clients import ClientFailure, ClientJob, Clients, client_trainer
from harness.config import ConfigError, MethodEntry, SuiteConfig, to_dict
from harness.data import Batches, DataBundle, load_data, partition, partition_report
from harness.devicetime import DeviceTime, client_time, round_device_time
from harness.fleet import MB, build_fleet
from harness.methods import (
    METHODS,
    CostStore,
    Estimator,
    MethodContext,
)
from harness.models import ModelSpec, input_error
from harness.planning import Candidate, plan_round, select
from harness.progress import Log, RunLog, SuiteProgress
from harness.records import (
    RecordsError,
    RunWriter,
    SuiteLock,
    code_identity,
    device_name,
    git_commit,
    now,
    refuse_links,
    versions,
    write_json,
)
from harness.registry import Registry
from harness.resume import (
    RunExistsError,
    check_same_config,
    code_changed,
    record_code_change,
    record_rounds_asked,
    run_identity,
    suite_manifest,
)
from harness.round_records import client_row, round_row, trained_fields, unselected_summary
from harness.scalars import TensorBoardLog, check_tensorboard, tensorboard_root
from harness.seeds import derived_seed, deterministic_kernels
from harness.summary import format_table, summary_table
from harness.training import NonFiniteLossError, evaluate


class RunLostError(RuntimeError):
    """A run's worker died more often than allowed; its complete rounds are recorded."""


def run_name(label: str, seed: int) -> str:
    """A run's folder in its suite's."""
    return f"{label}-seed{seed}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


@dataclass
class Clock:
    """Cumulative time of a run: the host's wall time (the simulator's cost) and the simulated
    time on the devices (synchronous rounds, each as long as its slowest participant)."""

    wall: float = 0.0
    device: float = 0.0


def evaluates(cfg: SuiteConfig, rnd: int) -> bool:
    """Whether round ``rnd`` evaluates its models: every ``eval_every``-th round and the last."""
    return rnd % cfg.eval_every == 0 or rnd == cfg.rounds


def mixed(n: int) -> torch.Tensor:
    """One fixed order of ``n`` samples for evaluation and calibration passes. Data sets stored class
    by class (an image folder) would otherwise give one-class batches, and a model that normalises
    with its batch's statistics (FedRolex's evaluation, HeteroFL's calibration pass) would be
    scored on those; a model with running statistics scores the same in any order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0xE7A1))


class Run:
    """One (method entry, seed) of a suite."""

    def __init__(self, cfg: SuiteConfig, entry: MethodEntry, seed: int, data: DataBundle,
                 device: torch.device, folder: Path, log: Log, estimator: Estimator, verbose: bool = False,
                 tensorboard: Path | None = None, allow_code_change: bool = False) -> None:
        self.cfg, self.entry, self.seed, self.data, self.device = cfg, entry, seed, data, device
        self.log = RunLog(folder, log, verbose)  # its lines in run.log; per-round ones on the console if verbose
        self.writer = RunWriter(folder)
        self.scalars = TensorBoardLog(tensorboard)
        self.allow_code_change = allow_code_change  # a resume may continue with other code (both recorded)
        self.new_code = False  # check() found the resume's code other than the records' (and it was allowed)
        self.fleet = build_fleet(cfg.fleet, seed)
        if cfg.clients_per_round > len(self.fleet):
            raise ConfigError(f"clients_per_round ({cfg.clients_per_round}) exceeds the fleet's "
                              f"{len(self.fleet)} devices")
        self.parts = partition(data.train_y, len(self.fleet), cfg.data, seed)
        if cfg.measure.gate == "allocator" and device.type != "cuda":
            raise ConfigError("measure.gate = 'allocator' adds a GPU allocator's overhead to the estimate; "
                              f"it needs a CUDA device, and this run is on {device.type}")
        input_shape = tuple(data.train_x.shape[1:])
        spec = suite_model_spec(cfg, data)
        labels = {d.id: torch.bincount(data.train_y[p], minlength=data.num_classes).tolist()
                  for d, p in zip(self.fleet, self.parts)}
        self.ctx = MethodContext(spec, cfg.model.width, input_shape, data.num_classes, self.fleet, seed,
                                 device, estimator, labels, cfg.rounds)
        cls = METHODS[entry.method]
        self.params = cls.parse_params(entry.params, f"methods ({entry.label})")
        torch.manual_seed(derived_seed(seed, 0))
        self.method = cls(self.params, self.ctx)
        self.test = Batches(data, mixed(len(data.test_y)), cfg.eval_batch_size, device, train=False)
        self.calibration = Batches(data, mixed(len(data.train_y)), cfg.eval_batch_size, device) \
            if self.method.calibrates else None
        self.tag = f"[{entry.label} seed {seed}]"
        self.identity = {"label": entry.label, "method": entry.method, "seed": seed}  # on every record line
        self.measured: set[str] = set()  # task shapes measured so far (``measure.clients = "shapes"``)

    def manifest(self) -> dict[str, Any]:
        model = self.ctx.build_model()
        return {
            "suite": self.cfg.name, "label": self.entry.label, "method": self.entry.method, "seed": self.seed,
            "method_params": dataclasses.asdict(self.params), "chance_cause": self.method.chance_cause,
            "family": self.method.family,
            "config": to_dict(self.cfg),
            "versions": versions(), "git_commit": git_commit(), "code": code_identity(), "started": now(),
            "device": device_name(self.device),
            "data": {"name": self.data.name, "content": self.data.content_key,
                     "train": len(self.data.train_y), "test": len(self.data.test_y),
                     "num_classes": self.data.num_classes, "input_shape": list(self.ctx.input_shape)},
            "model": {"name": self.cfg.model.name, "width": self.cfg.model.width,
                      "parameters": sum(p.numel() for p in model.parameters())},
            "fleet": [d.to_record() for d in self.fleet],
            "partition": partition_report(self.data.train_y, self.parts, self.data.num_classes),
        }

    def check(self, resume: bool) -> dict[str, Any] | None:
        """Before anything is written: whether this run may start or continue. Returns its
        checkpoint (None: a new run, or one killed before its first)."""
        refuse_links(self.writer.folder)
        if not self.writer.has_records():
            return None
        if not resume:
            raise RunExistsError(f"{self.writer.folder} already holds records; pass --resume to "
                                 "continue it, or choose another --out")
        identity = run_identity(self.cfg, self.entry.method, self.params, self.data.content_key)
        check_same_config(self.writer, self.cfg, identity,
                          {"fleet": [d.to_record() for d in self.fleet],
                           "partition": partition_report(self.data.train_y, self.parts, self.data.num_classes)})
        checkpoint = self.writer.load_checkpoint()
        done = 0 if checkpoint is None else checkpoint["round"]
        if done > self.cfg.rounds:
            raise ConfigError(f"cannot resume {self.writer.folder} with rounds = {self.cfg.rounds}: it has {done} "
                              "rounds recorded; a resume may add rounds, never drop them")
        self.writer.check_whole(done, len(self.fleet) if self.cfg.client_lines == "all" else None)
        # rounds to make: by the code that made the others, unless allowed
        self.new_code = done < self.cfg.rounds and code_changed(self.writer, self.allow_code_change)
        if checkpoint is not None:
            self.load_state(checkpoint)  # here, before anything is written: state that no longer fits
        return checkpoint

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.method.load_state_dict(checkpoint["method"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:  # torch's size mismatch, a missing key
            raise RecordsError(f"cannot resume {self.writer.folder}: its checkpoint does not fit this code's "
                               f"{self.entry.method} ({type(err).__name__}: {str(err).splitlines()[0]}); the code "
                               "changed what the method keeps; rerun it with another --out") from None

    def execute(self, resume: bool) -> None:
        """Run (or continue) the rounds, holding the run folder's lock: a second writer (a worker
        left over from a killed driver on a cluster) is refused instead of doubling rounds."""
        self.writer.folder.mkdir(parents=True, exist_ok=True)
        with SuiteLock(self.writer.folder):
            self._execute(resume)

    def _execute(self, resume: bool) -> None:
        first, clock = 1, Clock()
        if not self.writer.has_records():
            self.writer.write_manifest(self.manifest())
        else:
            checkpoint = self.check(resume)
            done = 0 if checkpoint is None else checkpoint["round"]
            if checkpoint is not None:
                self.measured = set(checkpoint.get("measured", []))
                first, clock = done + 1, Clock(checkpoint["wall_time"], checkpoint["device_time"])
            self.writer.truncate_after(done)  # a round cut short before its checkpoint is redone
            if first <= self.cfg.rounds:
                self.log(f"{self.tag} resuming after round {done}")
                record_rounds_asked(self.writer, self.cfg.rounds)
                if self.new_code:
                    record_code_change(self.writer, done)
                    self.log(f"{self.tag} continues with other code (--allow-code-change): both recorded")
        if first > self.cfg.rounds:
            return
        clients = client_trainer(self.cfg, self.data, self.device, self.log)
        try:
            for rnd in range(first, self.cfg.rounds + 1):
                interrupts.check()
                self.round(rnd, clock, clients)
        finally:
            clients.close()
            self.scalars.close()

    def round(self, rnd: int, clock: Clock, clients: Clients) -> None:
        start = time.perf_counter()
        candidates = plan_round(self.method, rnd, self.fleet)
        chosen = select(candidates, self.cfg.clients_per_round, self.cfg.selection, self.seed, rnd)
        results, rows, times, stragglers, jobs = [], [], [], 0, []
        every_line = self.cfg.client_lines == "all"
        for c in candidates:
            if not every_line and c.position not in chosen:
                continue  # counted in the round line instead
            row = client_row(self.identity, rnd, c)
            rows.append(row)
            if c.position in chosen and not c.reason:
                on_device = self.device_time(c)
                row.update(on_device.to_record())
                if self.cfg.deadline_s and on_device.total > self.cfg.deadline_s:
                    row.update(status="straggler", reason=f"device time {on_device.total:.1f} s > deadline "
                                                          f"{self.cfg.deadline_s:g} s")
                    stragglers += 1
                    continue
                shape = self.shape(c)
                measure = self.cfg.measure.clients == "all" or shape not in self.measured
                self.measured.add(shape)  # the round's later clients of this shape are not measured
                jobs.append((self.client_job(rnd, c, measure), row, on_device.total, c, shape))
            elif not c.reason:
                row["status"] = "not_selected"
        outcomes = clients.train(self.method, [job for job, *_ in jobs])
        failed = 0
        for (job, row, on_device, c, shape), outcome in zip(jobs, outcomes):
            if isinstance(outcome, ClientFailure):
                row.update(status="failed", reason=outcome.reason)
                failed += 1
                if job.measure:  # a later client measures it
                    self.measured.discard(shape)
                self.log(f"{self.tag} round {rnd}: device {row['device']} failed: {outcome.reason}")
                continue
            results.append(outcome)
            times.append(on_device)
            row.update(trained_fields(outcome, c.estimate))
        if results:
            self.method.aggregate(rnd, results)
        evaluated = evaluates(self.cfg, rnd)
        if evaluated and self.calibration is not None:
            self.method.calibrate(self.calibration)
        evals = {name: evaluate(model, self.test) if model is not None and evaluated else (None, None)
                 for name, model in self.method.eval_models().items()}
        for name, (_, loss) in evals.items():
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLossError(f"{self.tag} round {rnd}: the {name} model's evaluation loss is {loss}; "
                                         "training diverged (every earlier round is recorded): lower optimizer.lr")
        round_time = time.perf_counter() - start
        device_round = round_device_time(times, self.cfg.deadline_s, stragglers)
        clock.wall += round_time
        clock.device += device_round
        times = {"round_time": round_time, "wall_time": clock.wall, "device_wall_time": clock.device}
        record = round_row(self.identity, rnd, candidates, chosen, results, evals, times, self.method.round_info(rnd))
        record.update(device_time=device_round, stragglers=stragglers, failed=failed)
        if not every_line:  # the others as counts: what reports need of them
            record.update(unselected_summary([c for c in candidates if c.position not in chosen]))
        self.writer.append_round(record, rows)
        self.scalars.round(record)
        self.writer.save_checkpoint({"round": rnd, "wall_time": clock.wall, "device_time": clock.device,
                                     "method": self.method.state_dict(), "measured": sorted(self.measured)})
        self.log_round(record)

    def device_time(self, c: Candidate) -> DeviceTime:
        """The candidate's round on its device: known before it trains, from the task's cost."""
        samples = len(self.parts[c.position])
        return client_time(c.device, self.method.cost(c.spec, c.device), self.method.flops_per_sample(c.spec),
                           samples, self.cfg.local_epochs)

    def client_job(self, rnd: int, c: Candidate, measure: bool) -> ClientJob:
        return ClientJob(self.seed, rnd, c.position, c.device, c.spec, self.parts[c.position],
                         f"{self.tag} round {rnd}, device {c.device.id}", measure)

    def shape(self, c: Candidate) -> str:
        """The candidate's task shape: its task and the batch sizes its client trains (what its
        memory depends on, and what the estimate is kept by)."""
        sizes = self.ctx.estimator.batch_sizes(self.ctx.samples(c.device), c.spec.micro_batch)
        return repr((c.spec, sizes))

    def log_round(self, r: dict[str, Any]) -> None:
        acc = "  n/a " if r["accuracy"] is None else f"{100 * r['accuracy']:5.1f}%"
        peak = "-" if r["peak_tensor"] is None else f"{r['peak_tensor'] / MB:.2f} MB"
        if r["peak_tensor"] is None and r["peak_estimate"] is not None:  # no client of the round was measured
            peak = f"{r['peak_estimate'] / MB:.2f} MB (estimated)"
        self.log.round(f"{self.tag} round {r['round']}/{self.cfg.rounds}  acc {acc}  trained {r['participated']}"
                 f"/{r['devices']} (eligible {r['eligible']}"
                 + (f", offered {r['offered']}" if r["offered"] != r["eligible"] else "")
                 + f")  peak {peak}  {r['round_time']:.1f} s")
        if r["offered"] == 0:
            self.log(f"{self.tag} round {r['round']}: no device's budget fits this method's task; "
                     "every device is recorded as excluded")


def suite_folder(cfg: SuiteConfig, out: str | Path | None) -> Path:
    return Path(out or cfg.out).expanduser() / cfg.name  # "~/runs" as every other path key reads it


def suite_model_spec(cfg: SuiteConfig, data: DataBundle) -> ModelSpec:
    """The suite's model for its data set's images and classes; refused (before anything runs)
    if the model cannot take those images."""
    spec = ModelSpec(cfg.model.name, data.num_classes, data.in_channels, data.image_size)
    if (error := input_error(spec, cfg.model.width)) is not None:
        raise ConfigError(f"{error}; choose a model that takes {data.name} images")
    return spec


def suite_estimator(cfg: SuiteConfig, data: DataBundle, device: torch.device,
                    store: CostStore | None = None) -> Estimator:
    """One estimator for all of a suite's runs: a task's cost depends on the suite's data shape,
    batch, optimizer and device and on the method's parameters (its key), never on the seed, so
    the seeds and the methods that train the same task share each estimate (runs in other
    processes through ``store``)."""
    return Estimator(tuple(data.train_x.shape[1:]), data.num_classes, cfg.batch_size, cfg.optimizer,
                     cfg.measure.steps, device, cfg.measure.gate == "allocator", store)


@dataclass(frozen=True)
class RunJob:
    """One run of a suite for an executor: its method entry, seed and folder (and its TensorBoard
    folder, when the suite asks for one)."""

    entry: MethodEntry
    seed: int
    folder: Path
    tensorboard: Path | None = None
    allow_code_change: bool = False

    @property
    def name(self) -> str:
        return self.folder.name


@dataclass
class Shared:
    """What every run of a suite shares: its data, the device it trains on and the estimator."""

    data: DataBundle
    device: torch.device
    estimator: Estimator
    verbose: bool = False  # every run's per-round lines on the console too


SuiteExecutor = Callable[[SuiteConfig, list[RunJob], Shared, bool, SuiteProgress], None]


# "local" is below; harness.ray_executor registers "ray" (harness.suites imports it, so a loaded
# suite finds both); Ray itself is imported only when used
EXECUTORS: Registry[SuiteExecutor] = Registry("executor")


@EXECUTORS.register("local")
def run_locally(cfg: SuiteConfig, jobs: list[RunJob], shared: Shared, resume: bool, progress: SuiteProgress) -> None:
    """The suite's runs one after another in this process."""
    for job in jobs:
        Run(cfg, job.entry, job.seed, shared.data, shared.device, job.folder, progress.write, shared.estimator,
            shared.verbose, job.tensorboard, job.allow_code_change).execute(resume)
        progress.run_done(f"[{job.name}] finished")


def check_ray(cfg: SuiteConfig, device: torch.device) -> None:
    """Before anything is written: Ray installed where the suite asks for it, and given a share of
    the GPU the suite trains on (Ray hides the GPUs from a task that asks for none)."""
    runs_on_ray, clients_on_ray = cfg.executor == "ray", cfg.ray.client_workers > 0
    if not (runs_on_ray or clients_on_ray):
        return
    if find_spec("ray") is None:
        raise ConfigError("executor = 'ray' (or ray.client_workers) needs Ray, an optional extra: pip install "
                          "'fl-memory-harness[ray]' (in a clone: pip install -e '.[ray]')")
    if device.type == "cuda" and runs_on_ray and not cfg.ray.num_gpus:
        raise ConfigError("the suite trains on a GPU but ray.num_gpus is 0; give each run a share, e.g. "
                          "--set ray.num_gpus=0.25 (four runs on a GPU)")
    if device.type == "cuda" and clients_on_ray and not cfg.ray.client_num_gpus:
        raise ConfigError("the suite trains on a GPU but ray.client_num_gpus is 0; give each client worker a "
                          "share, e.g. --set ray.client_num_gpus=0.25")


def run_suite(cfg: SuiteConfig, out: str | Path | None = None, resume: bool = False,
              log: Log = print, verbose: bool = False, bar: bool = True, allow_code_change: bool = False) -> Path:
    """Run every (method, seed) of the suite into ``<out>/<suite name>/``; returns that folder.

    Every run is built (data, fleet, partition, method) and, on resume, checked against its records
    before anything is written, so a config error found by a method or a refused resume leaves no
    trace; one process at a time writes the folder. The suite's executor runs them (``local``: one
    after another here; ``ray``: as Ray tasks, docs/ray.md). ``log`` gets the suite's lines; a
    progress bar (on a terminal, with ``bar``) counts rounds and runs; ``verbose`` adds every run's
    per-round lines. A resume by other code than made a run's records is refused unless
    ``allow_code_change`` (the manifest then records which code made which rounds)."""
    folder = suite_folder(cfg, out)
    device = resolve_device(cfg.device)
    deterministic_kernels()
    if not resume and (folder / "suite.json").exists():
        raise RunExistsError(f"{folder} already holds a suite run; pass --resume to continue it, "
                             "or choose another --out")
    executor = EXECUTORS[cfg.executor]
    check_ray(cfg, device)
    check_tensorboard(cfg)
    data = load_data(cfg.data)
    runs = [(entry, seed, run_name(entry.label, seed)) for entry in cfg.methods for seed in cfg.seeds]
    estimator = suite_estimator(cfg, data, device)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RecordsError(f"cannot create the suite folder {folder}: {err.strerror or err}") from None
    with SuiteLock(folder):  # a refused process removes nothing: the folder is the holder's
        try:
            for entry, seed, name in runs:  # everything that can be refused is refused here
                Run(cfg, entry, seed, data, device, folder / name, log, estimator,
                    allow_code_change=allow_code_change).check(resume)
            write_json(folder / "suite.json", suite_manifest(cfg, folder, runs, resume))
        except BaseException:
            if created:  # refused (or interrupted) before a record: leave nothing
                shutil.rmtree(folder, ignore_errors=True)
            raise
        log(f"suite {cfg.name!r}: {len(runs)} runs x {cfg.rounds} rounds on {device_name(device)}, "
            f"data {data.name} ({len(data.train_y)} train / {len(data.test_y)} test), executor {cfg.executor} "
            f"-> {folder}")
        events = tensorboard_root(cfg)
        jobs = [RunJob(entry, seed, (folder / name).resolve(), events and events / name, allow_code_change)
                for entry, seed, name in runs]
        progress = SuiteProgress([job.folder for job in jobs], cfg.rounds, log, bar)
        try:
            executor(cfg, jobs, Shared(data, device, estimator, verbose), resume, progress)
        finally:
            progress.close()
    log("\n" + format_table(*summary_table(folder)))
    return folder
