"""``python -m harness``: run a suite, list what is registered, tabulate estimated memory."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from harness import interrupts
from harness.config import ConfigError, OptimizerConfig
from harness.data import DATASETS, PARTITIONS, Batches, DataError, PartitionError, load_data, random_bundle
from harness.engine import (
    EXECUTORS,
    RunLostError,
    check_ray,
    resolve_device,
    run_suite,
    suite_model_spec,
)
from harness.fleet import FLEETS, MB, build_fleet
from harness.markdown import markdown_head, markdown_row, markdown_table
from harness.memory import CATEGORIES
from harness.methods import METHODS, Estimator, Method, MethodContext, TaskError, TaskSpec
from harness.models import MODELS, ModelSpec, input_error
from harness.plugins import PluginError, load_plugins
from harness.progress import counted
from harness.records import RecordsError, device_name
from harness.resume import RunExistsError
from harness.suites import load_suite
from harness.tables import full_model_task, standalone_context, tasks_of
from harness.training import NonFiniteLossError, train_local


def cmd_run(args: argparse.Namespace) -> int:
    flags = [f"{key}={value}" for key, value in (("executor", args.executor), ("tensorboard", args.tensorboard))
             if value is not None]
    cfg = load_suite(args.suite, [*(args.set or []), *flags])
    folder = run_suite(cfg, args.out, args.resume, verbose=args.verbose, allow_code_change=args.allow_code_change)
    print(f"records: {folder}")
    print(f"report:  python -m reports {shlex.quote(str(folder))}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for title, registry in (("methods", METHODS), ("models", MODELS), ("data sets", DATASETS),
                            ("partitions", PARTITIONS), ("fleet distributions", FLEETS)):
        print(f"{title}: {', '.join(registry.names())}")
    return 0


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input: expected C,H,W such as 3,32,32, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input: expected three positive sizes C,H,W, got {text!r}")
    return shape


@dataclass
class MemoryTable:
    """What ``memory`` tabulates: the tasks, and the input, batch and optimizer they train at."""

    title: str
    input_shape: tuple[int, ...]
    num_classes: int
    batch: int
    optimizer: OptimizerConfig
    steps: int
    device: torch.device
    tasks: list[tuple[str, Method, TaskSpec]]


def model_table(args: argparse.Namespace, device: torch.device) -> MemoryTable:
    """Full-model training of ``args.model`` and, with ``--method``, each of the method's tasks."""
    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; allowed: {', '.join(MODELS.names())}")
    if args.width > 1:
        raise ConfigError(f"--width must be in (0, 1], got {args.width}")
    shape = parse_shape(args.input)
    optimizer = OptimizerConfig(momentum=args.momentum)
    spec = ModelSpec(args.model, args.classes, shape[0], shape[-1])
    if (error := input_error(spec, args.width)) is not None:
        raise ConfigError(f"{error}; give a larger --input")
    ctx = standalone_context(spec, args.width, shape, args.batch, optimizer, args.steps, device)
    tasks = [full_model_task(ctx)]
    names = [n.strip() for n in args.method.split(",") if n.strip() and n.strip() != "fedavg"]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"--method: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(METHODS.names())}")
    for name in names:
        cls = METHODS[name]
        tasks += tasks_of(cls, cls.parse_params({}), ctx, f"{name}: " if len(names) > 1 else "")
    title = (f"{args.model} width {args.width:g}, input {args.input}, batch {args.batch}, {args.classes} classes, "
             f"SGD momentum {args.momentum:g}, steps {args.steps}")
    return MemoryTable(title, shape, args.classes, args.batch, optimizer, args.steps, device, tasks)


def suite_table(args: argparse.Namespace, device: torch.device) -> MemoryTable:
    """Exactly the suite's tasks: every method entry with its parameters, at the suite's data
    shape, batch, optimizer and measured steps."""
    cfg = load_suite(args.suite, args.set or [])
    data = load_data(cfg.data)
    shape = tuple(data.train_x.shape[1:])
    estimator = Estimator(shape, data.num_classes, cfg.batch_size, cfg.optimizer, cfg.measure.steps, device)
    ctx = MethodContext(suite_model_spec(cfg, data), cfg.model.width, shape, data.num_classes,
                        build_fleet(cfg.fleet, cfg.seeds[0]), cfg.seeds[0], device, estimator, rounds=cfg.rounds)
    tasks = [full_model_task(ctx)]
    for entry in cfg.methods:
        cls = METHODS[entry.method]
        tasks += tasks_of(cls, cls.parse_params(entry.params, f"methods ({entry.label})"), ctx,
                              f"{entry.label}: ")
    title = (f"suite {cfg.name}: {cfg.model.name} width {cfg.model.width:g}, data {data.name} "
             f"{'x'.join(map(str, shape))}, batch {cfg.batch_size}, {data.num_classes} classes, "
             f"SGD momentum {cfg.optimizer.momentum:g}, steps {cfg.measure.steps}")
    return MemoryTable(title, shape, data.num_classes, cfg.batch_size, cfg.optimizer, cfg.measure.steps, device,
                       tasks)


def memory_table(args: argparse.Namespace) -> MemoryTable:
    if (args.model is None) == (args.suite is None):
        raise ConfigError("memory: give one of a model (e.g. resnet18) and --suite FILE")
    if args.set and args.suite is None:
        raise ConfigError("memory: --set applies to --suite only")
    device = resolve_device(args.device)
    return suite_table(args, device) if args.suite else model_table(args, device)


def measure_for_real(table: MemoryTable, method: Method, spec: TaskSpec) -> dict[str, float]:
    """Train the task for the table's steps on random data: the tracker's peak, the process RSS
    high-water mark and memory-profiler's independent sampling of RSS (MB, deltas); on a GPU the
    allocator's task peak, its overhead over the tracker and NVML's sampled peak."""
    from memory_profiler import memory_usage

    n = table.batch * table.steps
    batches = Batches(random_bundle(n, table.input_shape, table.num_classes), torch.arange(n), table.batch,
                      table.device)
    baseline = memory_usage(-1, interval=0.01, timeout=0.05, max_usage=True)
    train = (lambda: spec.trained(method.build_task(spec)), batches, 1, table.optimizer, table.steps)
    peak_mb, result = memory_usage((train_local, train), interval=0.005, max_usage=True, retval=True)
    row = {"tensor": result.memory["tensor"]["peak"] / MB, "memory-profiler": peak_mb - baseline,
           "pid": os.getpid()}
    for source, key, name in (("rss", "delta", "rss"), ("cuda", "task_peak", "allocator"),
                              ("cuda", "overhead", "overhead"), ("nvml", "delta", "nvml")):
        if source in result.memory:
            row[name] = result.memory[source][key] / MB
    return row


def measure_row(args: argparse.Namespace, index: int) -> dict[str, float]:
    """One row of ``--measure``, run in a fresh process so that no row inherits another's heap,
    caches or interpreter warm-up (whose registries are filled here, as ``main`` fills them)."""
    load_plugins()
    table = memory_table(args)
    _, method, spec = table.tasks[index]
    return measure_for_real(table, method, spec)


def measure_rows(args: argparse.Namespace, indices: list[int]) -> Iterator[dict[str, float]]:
    spawn = multiprocessing.get_context("spawn")
    for index in indices:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            yield pool.submit(measure_row, args, index).result()


def cmd_memory(args: argparse.Namespace) -> int:
    table = memory_table(args)
    rows, untrainable = [], []
    for index, (label, method, spec) in enumerate(counted(table.tasks, "estimating tasks")):
        try:
            rows.append((index, label, method.estimate(spec).to_record()))
        except TaskError as err:  # e.g. micro-batches of one through batch norm on 1x1 feature maps
            untrainable.append(str(err))
    full = rows[0][2]["peak"]
    head = ["task", "peak MB", *[f"{c} MB" for c in CATEGORIES], "vs full"]
    print(f"# estimated training peak: {table.title}")
    print(markdown_table(head, ([label, f"{rec['peak'] / MB:.2f}", *[f"{rec[c] / MB:.2f}" for c in CATEGORIES],
                                 f"{100 * (rec['peak'] / full - 1):+.1f}%"] for _, label, rec in rows)))
    for reason in untrainable:
        print(f"not in the table: {reason}")
    if args.measure:
        gpu = table.device.type == "cuda"
        extra = ["allocator task peak", "allocator overhead", "nvml peak delta"] if gpu else []
        head = ["task", "estimate", "tensor", "rss delta", "memory-profiler delta", *extra]
        print(f"\n# measured for real on random data on {device_name(table.device)}, each task in a fresh process "
              "(MB; rss and memory-profiler are process deltas, which include allocator caches and are never "
              "comparable byte for byte)")
        print(markdown_head(head))
        for (_, label, rec), real in zip(rows, measure_rows(args, [index for index, _, _ in rows])):
            cells = [label, f"{rec['peak'] / MB:.2f}", *[f"{real[k]:.2f}" if k in real else "absent" for k in
                     ("tensor", "rss", "memory-profiler", *(("allocator", "overhead", "nvml") if gpu else ()))]]
            print(markdown_row(cells))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from harness.tables import render, write_into

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ConfigError(f"--models: {'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'none given'}; "
                          f"allowed: {', '.join(MODELS.names())}")
    batches = args.batches
    text = render(models, batches, (models[0], batches[0]) if args.spot_check else None)
    if args.into:
        write_into(Path(args.into), text)
        print(f"wrote the memory tables into {args.into}")
    else:
        print(text)
    return 0


def cmd_overhead(args: argparse.Namespace) -> int:
    from harness.overhead import compare

    cfg = load_suite(args.suite, args.set or [])
    timing = compare(cfg, args.repeats)
    print(f"# FedAvg of suite {cfg.name}, seed {cfg.seeds[0]}, {cfg.rounds} rounds, {cfg.clients_per_round} "
          f"clients per round, on {device_name(resolve_device(cfg.device))}; best of {args.repeats}")
    rows = (("harness (estimates, measurement, records)", timing.harness_s, timing.harness_accuracy),
            ("bare PyTorch loop", timing.bare_s, timing.bare_accuracy))
    print(markdown_table(["path", "seconds", "final accuracy"],
                         ([path, f"{seconds:.2f}", f"{100 * accuracy:.1f}%"] for path, seconds, accuracy in rows)))
    print(f"harness / bare: {timing.ratio:.2f}x")
    if len(timing.pairs) > 1:
        ratios = timing.pair_ratios
        print(f"run by run: {' '.join(f'{r:.2f}x' for r in ratios)} (the first harness run pays one-off imports; "
              f"median of the others {statistics.median(ratios[1:]):.2f}x)")
    print("\n# where the harness's time goes (its best run; each part without the parts it calls)")
    print(markdown_table(["part", "seconds", "calls", "share"],
                         ([part, f"{seconds:.2f}", str(calls), f"{100 * seconds / timing.harness_s:.0f}%"]
                          for part, seconds, calls in timing.parts)))
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    cfg = load_suite(args.suite, args.set or [])
    check_ray(replace(cfg, executor="ray"), resolve_device(cfg.device))
    from harness.scaling import compare

    paths, task_ms = compare(cfg)
    print(f"# suite {cfg.name}: {len(cfg.methods)} methods x {len(cfg.seeds)} seeds x {cfg.rounds} rounds on "
          f"{device_name(resolve_device(cfg.device))}; ray: {cfg.ray.num_cpus:g} CPU(s) per run")
    accuracies = (", ".join(f"{k} {v}" for k, v in path.accuracy.items()) for path in paths)
    print(markdown_table(["executor", "seconds", "accuracy per method (last 10% of rounds)"],
                         ([path.executor, f"{path.seconds:.1f}", acc] for path, acc in zip(paths, accuracies))))
    print(f"local / ray: {paths[0].seconds / paths[1].seconds:.2f}x")
    print(f"ray per-task cost (an empty task, warm workers): {task_ms:.2f} ms")
    return 0


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a positive int or float, else one clear error."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers (``32,64``), else one clear error."""
    parse = positive(int)
    values = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, e.g. 32,64; got {text!r}")
    return values


def momentum(text: str) -> float:
    """An argparse type: SGD's momentum, in [0, 1) as a suite's ``optimizer.momentum``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="Run a suite, list what is registered, tabulate estimated memory.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite file")
    run.add_argument("suite", help="suite TOML file, e.g. suites/quick.toml")
    run.add_argument("--out", help="output folder (default: the suite's 'out'); the suite goes in OUT/<name>")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key, e.g. rounds=5, data.alpha=0.1, methods.LABEL.param=1")
    run.add_argument("--resume", action="store_true", help="continue a killed or finished suite run")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="print every run's per-round lines (always written to each run's run.log)")
    run.add_argument("--executor", choices=EXECUTORS.names(),
                     help="where the runs execute (default: the suite's 'executor'); ray: docs/ray.md")
    run.add_argument("--allow-code-change", action="store_true",
                     help="with --resume: continue runs whose records other code made (refused otherwise); each "
                          "run's manifest records which code made which rounds")
    run.add_argument("--tensorboard", metavar="DIR",
                     help="also write per-round scalars as TensorBoard event files under DIR/<suite>/<run> "
                          "(default: the suite's 'tensorboard'; needs the tensorboard extra)")
    run.set_defaults(func=cmd_run)
    sub.add_parser("list", help="list methods, models, data sets, partitions and fleet distributions").set_defaults(
        func=cmd_list)
    mem = sub.add_parser("memory", help="estimated training peak of a model's or a suite's tasks, by category")
    mem.add_argument("model", nargs="?", help="a registered model (or give --suite)")
    mem.add_argument("--suite", help="tabulate exactly this suite file's tasks, with its data, batch and methods")
    mem.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of the --suite file")
    mem.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="estimate and measure on this device (cuda: adds the allocator's view)")
    mem.add_argument("--batch", type=positive(int), default=32)
    mem.add_argument("--input", default="3,32,32", help="C,H,W of one sample (default 3,32,32)")
    mem.add_argument("--classes", type=positive(int), default=10)
    mem.add_argument("--width", type=positive(float), default=1.0, help="model width in (0, 1]")
    mem.add_argument("--momentum", type=momentum, default=0.9)
    mem.add_argument("--steps", type=positive(int), default=1, help="steps --measure trains (one has the peak)")
    mem.add_argument("--method", default="fedavg",
                     help="also tabulate these methods' tasks (stages, widths, micro-batches), e.g. microbatch,neulite")
    mem.add_argument("--measure", action="store_true",
                     help="also train each task for real and compare with the tracker, RSS and memory-profiler")
    mem.set_defaults(func=cmd_memory)
    tab = sub.add_parser("tables", help="every method's per-task estimated peak on CIFAR shapes, as Markdown")
    tab.add_argument("--models", default="resnet18,resnet34,vgg16")
    tab.add_argument("--batches", type=positive_ints, default=[32, 64], help="comma-separated batch sizes")
    tab.add_argument("--spot-check", action=argparse.BooleanOptionalAction, default=True,
                     help="also train each method's first task on the first model and batch, and compare")
    tab.add_argument("--into", help="write between the memory-tables markers of this Markdown file")
    tab.set_defaults(func=cmd_tables)
    over = sub.add_parser("overhead", help="a suite's FedAvg through the harness against a bare PyTorch loop")
    over.add_argument("suite", help="suite TOML file; its first seed, its FedAvg only")
    over.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. rounds=10")
    over.add_argument("--repeats", type=positive(int), default=2,
                      help="runs of each, alternately; the best of each counts (the first pays imports)")
    over.set_defaults(func=cmd_overhead)
    scale = sub.add_parser("scaling", help="a suite locally against --executor ray: the ratio and Ray's per-task cost")
    scale.add_argument("suite", help="suite TOML file")
    scale.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. seeds=[0]")
    scale.set_defaults(func=cmd_scaling)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interrupts.sticky():
            load_plugins()  # the built-in methods and FL_HARNESS_PLUGINS: every command may name one
            return args.func(args)
    except (ConfigError, DataError, PartitionError, RunExistsError, NonFiniteLossError, RecordsError,
            PluginError, RunLostError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError | DataError | PartitionError | PluginError) else 1
    except OSError as err:  # an unwritable, missing or full output folder: records so far are kept
        where = f" ({err.filename})" if err.filename else ""
        kept = "; the records written before it are kept (continue with --resume)" if args.command == "run" else ""
        print(f"error: {err.strerror or err}{where}{kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        # by the signal received: Ray re-raises a plain KeyboardInterrupt for whatever stopped its wait
        terminated = isinstance(err, interrupts.Terminated) or interrupts.received is interrupts.Terminated
        print("\n" + ("terminated (SIGTERM)" if terminated else "interrupted")
              + (": every completed round is recorded; continue with --resume" if args.command == "run" else ""),
              file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
