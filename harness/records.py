"""Run folders: the manifest, per-round and per-client JSON lines, and the resume checkpoint.

Records are appended and flushed (and fsynced) once per round, clients first and the round's line
last, then the checkpoint is replaced atomically. On resume, lines of rounds after the checkpoint
(a crash between the two) are dropped and those rounds rerun, so no record is lost or doubled.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

MANIFEST, ROUNDS, CLIENTS, CHECKPOINT = "manifest.json", "rounds.jsonl", "clients.jsonl", "checkpoint.pt"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import torchvision

    from harness import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "harness": __version__}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a torn last line (a killed writer) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunWriter:
    """Appends one run's records, keeps its checkpoint, and trims what a crash left half-done."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT

    def has_records(self) -> bool:
        return any((self.folder / name).exists() for name in (ROUNDS, CLIENTS, CHECKPOINT))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.folder / MANIFEST, manifest)

    def read_manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        return json.loads(path.read_text()) if path.exists() else {}

    def append_round(self, round_record: dict[str, Any], client_records: list[dict[str, Any]]) -> None:
        self._append(CLIENTS, client_records)
        self._append(ROUNDS, [round_record])

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        with (self.folder / name).open("a") as f:
            for row in rows:
                f.write(json.dumps(row, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def truncate_after(self, last_round: int) -> None:
        """Keep only complete lines of rounds ``<= last_round`` (the checkpoint's)."""
        for name in (ROUNDS, CLIENTS):
            path = self.folder / name
            if path.exists():
                keep = [r for r in read_jsonl(path) if r["round"] <= last_round]
                tmp = path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
                tmp.replace(path)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


