"""Every method's per-task estimated training peak on CIFAR shapes, as Markdown for
``docs/benchmarks.md`` (``python -m harness tables --into docs/benchmarks.md``), with a spot check
that a real training of one task per method measures what was estimated."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from harness.config import OptimizerConfig
from harness.data import Batches, random_bundle
from harness.fleet import MB, Device
from harness.markdown import markdown_head, markdown_row
from harness.methods import METHODS, Estimator, Method, MethodContext, TaskError, TaskSpec
from harness.models import ModelSpec
from harness.progress import counted
from harness.training import train_local

START, END = "<!-- memory-tables:start -->", "<!-- memory-tables:end -->"
SHAPE, CLASSES = (3, 32, 32), 10


Row = tuple[str, Method, TaskSpec]  # a label, the method, one of its tasks


def standalone_context(spec: ModelSpec, width: float, shape: tuple[int, ...], batch: int, optimizer: OptimizerConfig,
                       steps: int, device: torch.device) -> MethodContext:
    """A method context outside a run: one device with no budget, seed 0."""
    estimator = Estimator(shape, spec.num_classes, batch, optimizer, steps, device)
    return MethodContext(spec, width, shape, spec.num_classes, [Device(0, 2**62)], 0, device, estimator)


def tasks_of(cls: type[Method], params: object, ctx: MethodContext, prefix: str = "") -> list[Row]:
    """Every task ``cls`` tabulates (``memory_specs``), labelled; the method's global state is
    built on the meta device, since it is never trained here."""
    with torch.device("meta"):
        method = cls(params, ctx)
    return [(prefix + s.label, method, s) for s in method.memory_specs()]


def full_model_task(ctx: MethodContext) -> Row:
    """Full-model training, the row every table is measured against."""
    _, method, spec = tasks_of(METHODS["fedavg"], METHODS["fedavg"].parse_params({}), ctx)[0]
    return "full model (FedAvg)", method, spec


def all_method_tasks(model: str, batch: int) -> list[Row]:
    """(method name, method, task) for every registered method's tasks, default parameters."""
    ctx = standalone_context(ModelSpec(model, CLASSES, SHAPE[0], SHAPE[-1]), 1.0, SHAPE, batch, OptimizerConfig(), 1,
                             torch.device("cpu"))
    rows = []
    for name in METHODS.names():
        cls = METHODS[name]
        rows += [(name, method, spec) for _, method, spec in tasks_of(cls, cls.parse_params({}), ctx)]
    return rows


def peak_table(model: str, batches: list[int]) -> str:
    """One Markdown table: a row per (method, task), a peak and a share of FedAvg's per batch; a
    task a batch does not offer (a micro-batch as large as the batch) reads "-"."""
    columns = {b: {(name, spec.label): (method, spec) for name, method, spec in all_method_tasks(model, b)}
               for b in batches}
    full = {b: tasks["fedavg", "full"][0].estimate(TaskSpec("full")).peak for b, tasks in columns.items()}
    rows = list(dict.fromkeys(key for b in reversed(batches) for key in columns[b]))  # larger: more options
    rows.sort(key=lambda key: METHODS.names().index(key[0]))  # stable: each method's tasks stay in order
    head = ["method", "task", *[c for b in batches for c in (f"batch {b} (MB)", f"vs full at {b}")]]
    lines = [markdown_head(head)]
    for key in rows:
        cells = list(key)
        for b in batches:
            if key not in columns[b]:
                cells += ["-", "-"]
                continue
            method, spec = columns[b][key]
            try:
                peak = method.estimate(spec).peak
            except TaskError:  # cannot be trained at this batch (batch norm on one value per channel)
                cells += ["cannot train", "-"]
                continue
            cells += [f"{peak / MB:.2f}", f"{100 * peak / full[b]:.1f}%"]
        lines.append(markdown_row(cells))
    return "\n".join(lines)


def spot_check(model: str, batch: int) -> str:
    """The first task of every method trained for real on random data for two steps (the first
    measured, as in every client): the tracker's measured peak beside the estimate."""
    data = random_bundle(2 * batch, SHAPE, CLASSES)
    lines = [markdown_head(["method", "task", "estimate (bytes)", "measured (bytes)", "equal"])]
    seen = set()
    for name, method, spec in all_method_tasks(model, batch):
        if name in seen:
            continue
        seen.add(name)
        batches = Batches(data, torch.arange(2 * batch), batch, torch.device("cpu"))
        measured = train_local(lambda m=method, s=spec: s.trained(m.build_task(s)), batches, 1, OptimizerConfig(),
                               1, measure_rss=False).memory["tensor"]["peak"]
        estimate = method.estimate(spec).peak
        same = "yes" if estimate == measured else "NO"
        lines.append(markdown_row([name, spec.label, f"{estimate:,}", f"{measured:,}", same]))
    return "\n".join(lines)


def render(models: list[str], batches: list[int], spot: tuple[str, int] | None) -> str:
    parts = [f"Generated by `python -m harness tables --into docs/benchmarks.md` (CIFAR shapes {SHAPE[0]}x"
             f"{SHAPE[1]}x{SHAPE[2]}, {CLASSES} classes, SGD momentum {OptimizerConfig().momentum:g}, the peak of a "
             "step; MB = 2^20 bytes; every method with its default parameters; \"vs full\" is the share of FedAvg's "
             "full-model peak)."]
    for model in counted(models, "models"):
        parts += [f"### {model}", peak_table(model, batches)]
    if spot is not None:
        parts += [f"### Spot check: {spot[0]}, batch {spot[1]}, measured for real",
                  "Each method's first task trained for two steps on random data on the CPU, the first measured; "
                  "the `tensor` measurement next to the estimate.", spot_check(*spot)]
    return "\n\n".join(parts)


def write_into(path: Path, text: str) -> None:
    """Replace what lies between the table markers of ``path`` (appending them if absent)."""
    doc = path.read_text() if path.exists() else ""
    block = f"{START}\n{text}\n{END}"
    if START in doc and END in doc:
        doc = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + ("\n\n" if doc else "") + block + "\n"
    path.write_text(doc)
