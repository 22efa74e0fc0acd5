"""Run folders: the manifest, per-round and per-client JSON lines, and the resume checkpoint.

Records are appended and flushed (and fsynced) once per round, clients first and the round's line
last, then the checkpoint is replaced atomically. On resume, lines of rounds after the checkpoint
(a crash between the two) are dropped and those rounds rerun, so no record is lost or doubled.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import torch

from harness.registry import BUILTIN, plugin_names
from harness.schema import SCHEMAS, line_problem

MANIFEST, ROUNDS, CLIENTS, CHECKPOINT = "manifest.json", "rounds.jsonl", "clients.jsonl", "checkpoint.pt"
LOCK = ".lock"


class RecordsError(RuntimeError):
    """Records that cannot be continued as they are (torn, missing, corrupt, or in use)."""


# A suite folder is data that people share, so its files are never followed where they point: a
# link planted in place of a record, a lock or a temporary file would make a write land on any file
# the user can write. Files are opened with O_NOFOLLOW and temporary files created exclusively.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def refuse_links(folder: Path) -> None:
    """A folder's entries must be its own files and folders, never symbolic links."""
    links = sorted(p.name for p in folder.iterdir() if p.is_symlink()) if folder.is_dir() else []
    if folder.is_symlink() or links:
        what = folder if folder.is_symlink() else ", ".join(f"{folder / name}" for name in links)
        raise RecordsError(f"{what}: a symbolic link in a suite folder; records are written to plain files "
                           "only (a shared suite folder is data): remove it, or choose another --out")


def open_new(path: Path, mode: str = "w") -> IO[Any]:
    """``path`` created afresh for writing: whatever was there (a leftover temporary file, a planted
    link) is removed, never followed."""
    path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644), mode)


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """A failed write names its file: a full disk's OSError from a write has none, and torch's
    serializer reports it as a RuntimeError."""
    try:
        yield
    except OSError as err:
        err.filename = err.filename or str(path)
        raise
    except RuntimeError as err:  # torch.save on a full disk ("PytorchStreamWriter failed writing file")
        raise OSError(errno.EIO, f"write failed ({str(err).splitlines()[0]})", str(path)) from None


def open_append(path: Path) -> IO[str]:
    """``path`` opened for appending, refused (ELOOP) if it is a link."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644), "a")


class SuiteLock:
    """One writer per folder (a suite's, and each run's): an exclusive OS lock on ``folder/.lock``
    for the whole run, so a second process (a concurrent run, a ``--resume`` started meanwhile, a
    Ray worker left over from a killed driver) is refused instead of doubling rounds. The OS drops
    the lock when its holder dies, so a stale lock is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._file = None

    def __enter__(self) -> SuiteLock:
        import fcntl

        refuse_links(self.path.parent)
        self._file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644), "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise RecordsError(f"another harness process ({holder}) is writing {self.path.parent}; wait "
                               "for it to finish or choose another --out") from None
        except OSError as err:  # no flock here (NFS without lockd, some parallel file systems)
            print(f"warning: cannot lock {self.path} ({err.strerror}); run one harness process at a time "
                  "on this folder", file=sys.stderr)
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {platform.node()}")
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_files(plugins: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """The Python files of the code that makes records (the harness, the built-in methods, the
    ``plugins`` modules), each with a name that does not depend on where it is installed."""
    files = []
    for name in ("harness", *BUILTIN, *plugins):
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        for location in spec.submodule_search_locations or []:  # a package: every module under it
            files += [(f"{name}/{p.relative_to(location)}", p) for p in Path(location).rglob("*.py")]
        if not spec.submodule_search_locations and spec.origin:
            files.append((name, Path(spec.origin)))
    return sorted(files)


def code_identity() -> dict[str, str | None]:
    """Which code writes a run: its commit and a hash of its source files (``FL_HARNESS_PLUGINS``
    modules included), so that an uncommitted edit (which the commit does not show) tells as well."""
    return _code_identity(tuple(plugin_names()))


@functools.cache  # once per process and set of plugins
def _code_identity(plugins: tuple[str, ...]) -> dict[str, str | None]:
    digest = hashlib.blake2b(digest_size=16)
    for name, path in source_files(plugins):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return {"commit": git_commit(), "source": digest.hexdigest()}


def versions() -> dict[str, str]:
    import torchvision

    from harness import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "harness": __version__}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open_new(tmp) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # a rename replaces a link at ``path`` itself, never its target


def _rounds(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:5])) + (f" (and {len(numbers) - 5} more)" if len(numbers) > 5 else "")


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when the file is missing); one clear error when it does not parse."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordsError(f"{path} does not parse ({err}); fix or remove it, or choose another --out") from None
    if not isinstance(data, dict):
        raise RecordsError(f"{path} is not a JSON object; fix or remove it, or choose another --out")
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete records only: a torn line (a killed writer; cut inside a character, or foreign
    bytes, it is not even text), or one that is not a record line of its file (``harness.schema``:
    a key missing, a round given as text), is skipped, and reads as missing where it matters."""
    return parse_jsonl(path.read_bytes().splitlines(), path.name) if path.exists() else []


def parse_jsonl(lines: list[bytes], name: str) -> list[dict[str, Any]]:
    """The record lines of file ``name`` among ``lines`` (see ``read_jsonl``)."""
    schema = SCHEMAS[name]
    rows = []
    for line in lines:
        try:
            row = json.loads(line.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if line_problem(row, schema) is None:
            rows.append(row)
    return rows


class RunWriter:
    """Appends one run's records, keeps its checkpoint, and trims what a crash left half-done."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT

    def has_records(self) -> bool:
        return any((self.folder / name).exists() for name in (ROUNDS, CLIENTS, CHECKPOINT))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / MANIFEST, manifest)

    def read_manifest(self) -> dict[str, Any]:
        return read_json_file(self.folder / MANIFEST)

    def append_round(self, round_record: dict[str, Any], client_records: list[dict[str, Any]]) -> None:
        self._append(CLIENTS, client_records)
        self._append(ROUNDS, [round_record])

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        with naming(self.folder / name), open_append(self.folder / name) as f:
            for row in rows:
                f.write(json.dumps(row, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        tmp = self.checkpoint_path.with_suffix(".tmp")
        with naming(tmp):
            with open_new(tmp, "wb") as f:
                torch.save(state, f)
            tmp.replace(self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            # tensors and plain containers only: a checkpoint is data, and a pickled object in a shared
            # folder would otherwise run its code here
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise RecordsError(f"{self.checkpoint_path} holds more than tensors and plain containers (a suite "
                               "folder is data: its objects are never unpickled); the run cannot be resumed: "
                               "rerun it with another --out") from None
        except Exception as err:  # a truncated or foreign file: zip and EOF errors alike
            raise RecordsError(f"{self.checkpoint_path} does not load ({type(err).__name__}: {err}); the run "
                               "cannot be resumed: rerun it with another --out") from None
        if not isinstance(state, dict) or "round" not in state:
            raise RecordsError(f"{self.checkpoint_path} is not a harness checkpoint; rerun with another --out")
        return state

    def check_whole(self, done: int, devices: int | None) -> None:
        """Every round up to the checkpoint's must be in both files, whole: one round line and one
        client line per device each (``devices``; None: per device the round selected, as its line
        says). A gap (a torn line, a deleted file) cannot be redone from this checkpoint, so the
        resume is refused, naming what is missing."""
        round_lines = read_jsonl(self.folder / ROUNDS)
        rounds = Counter(r["round"] for r in round_lines)
        per_round = Counter(c["round"] for c in read_jsonl(self.folder / CLIENTS))
        selected = {r["round"]: r.get("selected") for r in round_lines}

        def lines_of(r: int) -> int | None:  # None: its round line, which says how many, is missing
            return devices if devices is not None else selected.get(r)

        reached = max(rounds, default=0)
        if done == 0 and reached > 1:  # only a kill inside round 1 leaves records without a checkpoint
            raise RecordsError(f"cannot resume {self.folder}: its records reach round {reached} but its "
                               f"{CHECKPOINT} is missing; rerun it with another --out")
        doubled = [r for r in range(1, done + 1) if rounds[r] > 1] + \
            [r for r in range(1, done + 1) if lines_of(r) is not None and per_round[r] > lines_of(r)]
        if doubled:
            raise RecordsError(f"cannot resume {self.folder}: rounds {_rounds(sorted(set(doubled)))} have more lines "
                               "than one run writes (a line copied, or two runs' records merged); rerun it with "
                               "another --out")
        missing = [r for r in range(1, done + 1) if rounds[r] != 1]
        short = [r for r in range(1, done + 1) if lines_of(r) is not None and per_round[r] != lines_of(r)]
        if missing or short:
            what = (f"round lines {_rounds(missing)} in {ROUNDS}" if missing else "") + \
                   (" and " if missing and short else "") + \
                   (f"client lines of rounds {_rounds(short)} in {CLIENTS}" if short else "")
            raise RecordsError(f"cannot resume {self.folder}: its checkpoint covers round {done} but {what} are "
                               "missing or torn; rerun it with another --out")

    def truncate_after(self, last_round: int) -> None:
        """Keep only complete lines of rounds ``<= last_round`` (the checkpoint's)."""
        for name in (ROUNDS, CLIENTS):
            path = self.folder / name
            if path.exists():
                lines = path.read_bytes().splitlines()
                keep = [r for r in parse_jsonl(lines, name) if r["round"] <= last_round]
                if len(keep) == len(lines):
                    continue  # nothing past the checkpoint and nothing torn: no rewrite (a no-op resume)
                tmp = path.with_suffix(".tmp")
                with open_new(tmp) as f:
                    f.write("".join(json.dumps(r) + "\n" for r in keep))
                tmp.replace(path)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


