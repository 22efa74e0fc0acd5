"""``python -m harness``: run a suite, list what is registered, tabulate estimated memory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch

from harness.config import ConfigError, OptimizerConfig, load_suite
from harness.data import DATASETS, PARTITIONS, Batches, DataBundle, DataError, PartitionError
from harness.engine import RunExistsError, run_suite
from harness.fleet import FLEETS, MB, Device
from harness.memory import CATEGORIES
from harness.methods import METHODS, Estimator, Method, MethodContext, TaskSpec
from harness.models import MODELS, ModelSpec
from harness.plugins import PluginError
from harness.records import RecordsError
from harness.training import NonFiniteLossError, train_local


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_suite(args.suite, args.set or [])
    folder = run_suite(cfg, args.out, args.resume)
    print(f"records: {folder}")
    print(f"report:  python -m reports {folder}")
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


def memory_tasks(args: argparse.Namespace) -> list[tuple[str, Method, TaskSpec]]:
    """(label, method, spec) for full-model training and, with ``--method``, each of its tasks."""
    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; allowed: {', '.join(MODELS.names())}")
    if args.width > 1:
        raise ConfigError(f"--width must be in (0, 1], got {args.width}")
    shape = parse_shape(args.input)
    estimator = Estimator(shape, args.classes, args.batch, OptimizerConfig(momentum=args.momentum),
                          args.steps, torch.device("cpu"))
    spec = ModelSpec(args.model, args.classes, shape[0], shape[-1])
    ctx = MethodContext(spec, args.width, shape, args.classes, [Device(0, 2**62)], 0, torch.device("cpu"),
                        estimator)
    fedavg = METHODS["fedavg"](METHODS["fedavg"].parse_params({}), ctx)
    tasks = [("full model (FedAvg)", fedavg, TaskSpec("full"))]
    if args.method != "fedavg":
        cls = METHODS[args.method]
        with torch.device("meta"):  # the method's global state is never trained here
            method = cls(cls.parse_params({}), ctx)
        tasks += [(s.label, method, s) for s in method.memory_specs()]
    return tasks


def measure_for_real(args: argparse.Namespace, method: Method, spec: TaskSpec) -> dict[str, float]:
    """Train the task for ``--steps`` steps on random data: the tracker's peak, the process RSS
    high-water mark, and memory-profiler's independent sampling of RSS (MB, deltas)."""
    from memory_profiler import memory_usage

    shape = parse_shape(args.input)
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, args.classes, (n,), generator=g)
    data = DataBundle("random", x, y, x, y, args.classes, (0.5,) * shape[0], (0.25,) * shape[0])
    batches = Batches(data, torch.arange(n), args.batch, torch.device("cpu"))
    baseline = memory_usage(-1, interval=0.01, timeout=0.05, max_usage=True)
    train = (lambda: method.build_task(spec), batches, 1, OptimizerConfig(momentum=args.momentum), args.steps)
    peak_mb, result = memory_usage((train_local, train), interval=0.005, max_usage=True, retval=True)
    row = {"tensor": result.memory["tensor"]["peak"] / MB, "memory-profiler": peak_mb - baseline}
    if "rss" in result.memory:
        row["rss"] = result.memory["rss"]["delta"] / MB
    return row


def cmd_memory(args: argparse.Namespace) -> int:
    tasks = memory_tasks(args)
    rows = [(label, method.estimate(spec).to_record()) for label, method, spec in tasks]
    full = rows[0][1]["peak"]
    head = ["task", "peak MB", *[f"{c} MB" for c in CATEGORIES], "vs full"]
    print(f"# estimated training peak: {args.model} width {args.width:g}, input {args.input}, batch {args.batch}, "
          f"{args.classes} classes, SGD momentum {args.momentum:g}, {args.steps} steps")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, rec in rows:
        cells = [label, f"{rec['peak'] / MB:.2f}", *[f"{rec[c] / MB:.2f}" for c in CATEGORIES],
                 f"{100 * (rec['peak'] / full - 1):+.1f}%"]
        print("| " + " | ".join(cells) + " |")
    if args.measure:
        print("\n# measured for real on random data (MB; rss and memory-profiler are process deltas, "
              "which include allocator caches and are never comparable byte for byte)")
        print("| task | estimate | tensor | rss delta | memory-profiler delta |\n|---|---|---|---|---|")
        for (label, method, spec), (_, rec) in zip(tasks, rows):
            real = measure_for_real(args, method, spec)
            rss = f"{real['rss']:.2f}" if "rss" in real else "absent"
            print(f"| {label} | {rec['peak'] / MB:.2f} | {real['tensor']:.2f} | {rss} | "
                  f"{real['memory-profiler']:.2f} |")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite file")
    run.add_argument("suite", help="suite TOML file, e.g. suites/quick.toml")
    run.add_argument("--out", help="output folder (default: the suite's 'out'); the suite goes in OUT/<name>")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key, e.g. rounds=5, data.alpha=0.1, methods.LABEL.param=1")
    run.add_argument("--resume", action="store_true", help="continue a killed or finished suite run")
    run.set_defaults(func=cmd_run)
    sub.add_parser("list", help="list methods, models, data sets").set_defaults(func=cmd_list)
    mem = sub.add_parser("memory", help="estimated training peak of a model, by category")
    mem.add_argument("model")
    mem.add_argument("--batch", type=positive(int), default=32)
    mem.add_argument("--input", default="3,32,32", help="C,H,W of one sample (default 3,32,32)")
    mem.add_argument("--classes", type=positive(int), default=10)
    mem.add_argument("--width", type=positive(float), default=1.0, help="model width in (0, 1]")
    mem.add_argument("--momentum", type=float, default=0.9)
    mem.add_argument("--steps", type=positive(int), default=2, help="steps simulated (2: optimizer state exists)")
    mem.add_argument("--method", default="fedavg", help="also tabulate this method's tasks (stages, widths)")
    mem.add_argument("--measure", action="store_true",
                     help="also train each task for real and compare with the tracker, RSS and memory-profiler")
    mem.set_defaults(func=cmd_memory)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, PartitionError, RunExistsError, NonFiniteLossError, RecordsError,
            PluginError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError | DataError | PartitionError | PluginError) else 1
    except OSError as err:  # an unwritable, missing or full output folder: records so far are kept
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}; every completed round is recorded", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every completed round is recorded; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
