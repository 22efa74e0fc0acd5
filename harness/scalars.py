"""Per-round scalars as TensorBoard event files (suite key ``tensorboard``, or ``run --tensorboard
DIR``), so a long suite can be watched with ``tensorboard --logdir DIR`` as it runs. They are a view
of the round records, written after each round's line; the records stay the source of truth."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

from harness.config import ConfigError, SuiteConfig
from harness.fleet import MB


def check_tensorboard(cfg: SuiteConfig) -> None:
    """Before anything is written: the package that writes event files, when the suite asks for them."""
    if cfg.tensorboard and find_spec("tensorboard") is None:
        raise ConfigError("tensorboard (or run --tensorboard) writes TensorBoard event files and needs the "
                          "tensorboard package, an optional extra: pip install 'fl-memory-harness[tensorboard]' "
                          "(in a clone: pip install -e '.[tensorboard]')")


def tensorboard_root(cfg: SuiteConfig) -> Path | None:
    """Where the suite's event files go (``<tensorboard>/<suite name>/<run>/``), absolute, so that a
    Ray worker in another working directory writes them to the same place; None: not asked for."""
    return Path(cfg.tensorboard).expanduser().resolve() / cfg.name if cfg.tensorboard else None


def round_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The round record's scalars under TensorBoard tags (MB, seconds, shares of the fleet); a value
    the round has not (an accuracy on a round without evaluation, a peak with no client) is left out."""
    devices = record["devices"] or 1
    others = list(record["evals"].items())[1:]  # the first is the headline: accuracy/test
    values = {
        "accuracy/test": record["accuracy"], "loss/test": record["loss"],
        **{f"accuracy/{name}": e["accuracy"] for name, e in others},
        "memory/peak_measured_MB": record["peak_tensor"] and record["peak_tensor"] / MB,
        "memory/peak_estimated_MB": record["peak_estimate"] and record["peak_estimate"] / MB,
        "time/device_round_s": record["device_time"], "time/device_total_s": record["device_wall_time"],
        "time/host_round_s": record["round_time"],
        "participation/took_part": record["participated"] / devices,
        "participation/offered": record["offered"] / devices, "participation/eligible": record["eligible"] / devices,
        "communication/up_MB": record["bytes_up"] / MB, "communication/down_MB": record["bytes_down"] / MB,
    }
    return {tag: float(value) for tag, value in values.items() if value is not None}


class TensorBoardLog:
    """One run's event files in ``folder``, opened at its first round (a run only checked writes
    nothing); a no-op without a folder."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._writer = None

    def round(self, record: dict[str, Any]) -> None:
        if self.folder is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # an optional extra: imported only when asked for

            self._writer = SummaryWriter(str(self.folder))
        for tag, value in round_scalars(record).items():
            self._writer.add_scalar(tag, value, record["round"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
