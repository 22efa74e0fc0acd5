"""Read a suite folder's records (docs/records.md) into pandas DataFrames.

This is the only module that knows the file layout. Records may be partial (a run still going, a
torn last line, a run that never started): whatever is missing becomes a note, never an error, so
a suite can be looked at while it runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.schema import SCHEMAS, line_problem  # the one record check, shared with the harness (no torch)

CATEGORIES = ("parameters", "buffers", "gradients", "optimizer", "state", "activations", "other")
TENSOR = "memory.tensor."  # prefix of the measured tensor peak and its categories in clients
ESTIMATE = "estimate.peak"  # the task's estimated peak (the memory a device needs for it)
ROUND_COLUMNS = (
    "round", "accuracy", "loss", "devices", "eligible", "offered", "selected", "participated", "excluded", "stragglers",
    "peak_tensor", "train_time", "round_time", "wall_time", "device_time", "device_wall_time", "bytes_up",
    "bytes_down",
)
CLIENT_COLUMNS = ("round", "budget", "need", "weight", "fits", ESTIMATE, "device_time", "compute_time", "comm_time",
                  "flops", TENSOR + "peak", *(TENSOR + c for c in CATEGORIES))
FLEET_COLUMNS = ("suite", "seed", "id", "budget", "flops", "up", "down")
RUN_KEYS = ("label", "method", "seed")
TARGET = 0.9  # time to target's accuracy when neither --target nor the suite's report.target gives one


class ReportError(Exception):
    """The folder holds nothing a report could be rendered from."""


@dataclass
class Suite:
    """A suite's records: one row per run, per round and per client-round, plus the fleets."""

    path: Path
    name: str
    info: dict[str, Any]  # suite.json; {} when it is missing
    runs: pd.DataFrame  # label, method, seed, dir, suite, family: every run the suite lists, started or not
    manifests: dict[tuple[str, int], dict[str, Any]]
    rounds: pd.DataFrame  # run keys + rounds.jsonl keys, nested ones dotted ("evals.full.accuracy")
    clients: pd.DataFrame  # run keys + clients.jsonl keys, nested ones dotted ("memory.tensor.peak")
    fleet: pd.DataFrame  # suite, seed, id, budget, flops, up, down: one row per device of each fleet
    notes: list[str]
    compared: pd.DataFrame | None = None  # several suites: the config keys in which they differ

    def only(self, labels: list[str]) -> Suite:
        """The suite with only these labels' runs (a report of a subset); an unknown label is refused,
        naming those the records hold."""
        unknown = [label for label in labels if label not in self.labels]
        if unknown:
            raise ReportError(f"--labels: {', '.join(map(repr, unknown))} not in the records; they hold "
                              f"{', '.join(self.labels)}")
        kept = set(labels)
        return dataclasses.replace(
            self, runs=self.runs[self.runs["label"].isin(kept)].reset_index(drop=True),
            rounds=self.rounds[self.rounds["label"].isin(kept)].reset_index(drop=True),
            clients=self.clients[self.clients["label"].isin(kept)].reset_index(drop=True),
            manifests={key: m for key, m in self.manifests.items() if key[0] in kept})

    @property
    def targets(self) -> list[float]:
        """The time-to-target accuracies the suites' records ask for (``report.target``), each once."""
        infos = self.info.get("suites", [self.info])  # several suites compared: each one's suite.json
        return sorted({info.get("config", {}).get("report", {}).get("target", TARGET) for info in infos})

    @property
    def labels(self) -> list[str]:
        return sorted(self.runs["label"].unique())

    @property
    def methods(self) -> dict[str, str]:
        """Each label's method."""
        return dict(zip(self.runs["label"], self.runs["method"], strict=True))

    @property
    def families(self) -> dict[str, str]:
        """Each label's kind of method ("width scaling"), as its manifest records it."""
        known = self.runs[self.runs["family"] != "other"]  # a run not started (or recorded before) says other
        return {label: "other" for label in self.labels} | dict(zip(known["label"], known["family"], strict=True))

    @property
    def suites(self) -> dict[str, str]:
        """Each label's suite (one, unless several suites are compared)."""
        return dict(zip(self.runs["label"], self.runs["suite"], strict=True))

    @property
    def config(self) -> dict[str, Any]:
        if self.info.get("config"):
            return self.info["config"]
        return next((m["config"] for m in self.manifests.values() if m.get("config")), {})


def read_json(path: Path, notes: list[str], name: str) -> dict[str, Any]:
    """A JSON object, or {} with a note when the file is missing or does not parse."""
    try:
        data = json.loads(path.read_text(errors="replace"))
    except FileNotFoundError:
        notes.append(f"{name}: missing")
        return {}
    except json.JSONDecodeError as err:
        notes.append(f"{name}: does not parse ({err.msg}); ignored")
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: Path, notes: list[str], name: str) -> list[dict[str, Any]]:
    """Every line that is a record of its file (``harness.schema``, the check the harness's resume
    makes); a torn or malformed line (a run killed mid-write, a hand edit) is skipped with a note."""
    if not path.exists():
        notes.append(f"{name}: missing")
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            notes.append(f"{name}: line {number} does not parse (torn write?); skipped")
            continue
        problem = line_problem(row, SCHEMAS[path.name])
        if problem:
            notes.append(f"{name}: line {number} is not a record ({problem}); skipped")
            continue
        rows.append(row)
    return rows


def unselected_rows(round_line: dict[str, Any]) -> list[dict[str, Any]]:
    """A round's unselected devices as the harness counts them (``client_lines = "selected"``): one
    row per task offered, standing for ``weight`` devices of which ``fits`` fit it (its budget covers
    the task), with the task's estimate; the device ids are negative, never a real device's."""
    groups = round_line.get("unselected")
    if not isinstance(groups, list):
        return []
    return [{**{k: v for k, v in g.items() if k not in ("estimate", "devices", "fit")}, "round": round_line["round"],
             "device": -1 - i, "status": "unselected", "estimate": {"peak": g.get("estimate")},
             "weight": g.get("devices"), "fits": g.get("fit")}
            for i, g in enumerate(groups) if isinstance(g, dict)]


def _identity(folder: Path) -> dict[str, Any] | None:
    """Which run a folder holds: from its manifest, else from its first record line."""
    candidates = [read_json(folder / "manifest.json", [], ""),
                  *read_jsonl(folder / "rounds.jsonl", [], "")[:1],
                  *read_jsonl(folder / "clients.jsonl", [], "")[:1]]
    found = next((c for c in candidates if all(k in c for k in RUN_KEYS)), None)
    return {**{k: found[k] for k in RUN_KEYS}, "dir": folder.name} if found else None


def _own_folder(name: object) -> bool:
    """A run's ``dir`` names a folder of the suite itself: one path component, not "." or ".."."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _listed_runs(path: Path, info: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """The runs suite.json lists, or, without it, every sub-folder that holds records."""
    keys = (*RUN_KEYS, "dir")
    listed = [r for r in info.get("runs", []) if isinstance(r, dict) and all(k in r for k in keys)]
    inside = [r for r in listed if _own_folder(r["dir"])]
    if len(inside) < len(listed):
        notes.append(f"suite.json: {len(listed) - len(inside)} run(s) point outside the suite folder; ignored")
        listed = inside
    if listed:
        return [{k: r[k] for k in keys} for r in listed]
    if info:
        notes.append("suite.json lists no runs; using the run folders found")
    found = (_identity(folder) for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink()))
    return [run for run in found if run]


def _frame(rows: list[dict[str, Any]], numeric: tuple[str, ...], keys: list[str]) -> pd.DataFrame:
    """Flatten nested records; guarantee the columns the reports use, numeric, one row per key."""
    frame = pd.json_normalize(rows) if rows else pd.DataFrame()
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
    for column in (*RUN_KEYS, *keys):
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame.drop_duplicates(keys, keep="last").sort_values(keys, ignore_index=True)


def load_suite(path: str | Path) -> Suite:
    """Read every run of the suite folder at ``path``; raise ReportError only if there is none."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder of suite records")
    notes: list[str] = []
    info = read_json(path / "suite.json", notes, "suite.json")
    suite_name = info.get("suite") or path.name
    runs, manifests, rounds, clients, fleets = [], {}, [], [], []
    for run in _listed_runs(path, info, notes):
        run = {**run, "suite": suite_name, "family": "other"}
        runs.append(run)
        folder, name = path / run["dir"], f"{run['label']} seed {run['seed']}"
        if folder.is_symlink():  # records found inside the suite folder only
            notes.append(f"{name}: its run folder {run['dir']!r} is a link; ignored")
            continue
        if not folder.is_dir():
            notes.append(f"{name}: no run folder {run['dir']!r} (not started?)")
            continue
        manifest = read_json(folder / "manifest.json", notes, f"{run['dir']}/manifest.json")
        manifests[run["label"], run["seed"]] = manifest
        run["family"] = manifest.get("family") or "other"  # records from before methods named one: other
        fleets += [{"seed": run["seed"], **d} for d in manifest.get("fleet", [])]
        identity = {k: run[k] for k in (*RUN_KEYS, "suite")}
        run_rounds = [{**r, **identity}
                      for r in read_jsonl(folder / "rounds.jsonl", notes, f"{run['dir']}/rounds.jsonl")]
        rounds += run_rounds
        clients += [{**c, **identity}
                    for c in read_jsonl(folder / "clients.jsonl", notes, f"{run['dir']}/clients.jsonl")]
        clients += [{**row, **identity} for r in run_rounds for row in unselected_rows(r)]
        expected = (manifest.get("config") or info.get("config") or {}).get("rounds")  # the run's own, as resumed
        recorded = len({r.get("round") for r in run_rounds})
        if expected and recorded < expected:
            notes.append(f"{name}: {recorded} of {expected} rounds recorded (still running or stopped)")
    if not runs:
        suites = sorted(p.name for p in path.iterdir() if (p / "suite.json").is_file())
        hint = f"; its suite folders: {', '.join(suites)} (give one of those)" if suites else ""
        raise ReportError(f"{path} holds no run records (no suite.json listing runs, no folder with a "
                          f"manifest or record lines){hint}")
    fleet = pd.DataFrame([{"suite": suite_name, **d} for d in fleets], columns=list(FLEET_COLUMNS))
    return Suite(
        path=path,
        name=suite_name,
        info=info,
        runs=pd.DataFrame(runs).sort_values(["label", "seed"], ignore_index=True),
        manifests=manifests,
        rounds=_frame(rounds, ROUND_COLUMNS, ["label", "seed", "round"]),
        clients=_frame(clients, CLIENT_COLUMNS, ["label", "seed", "round", "device"]),
        fleet=fleet.drop_duplicates(["seed", "id"]).reset_index(drop=True),
        notes=notes,
    )


def records(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A suite folder's rounds and clients as two DataFrames, one row per record line, nested keys
    dotted (``evals.full.accuracy``, ``memory.tensor.peak``), plus ``label``, ``method``, ``seed``."""
    suite = load_suite(path)
    return suite.rounds, suite.clients
