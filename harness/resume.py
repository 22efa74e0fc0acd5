"""Continuing a run from its records: what may change between a run and its resume, and the checks
that refuse a resume which would mix two experiments in one set of records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from harness.config import SAFE_NAME, ConfigError, MethodEntry, SuiteConfig, to_dict
from harness.records import (
    MANIFEST,
    RecordsError,
    RunWriter,
    code_identity,
    git_commit,
    now,
    read_json_file,
    versions,
)

# may change between a run and its resume: how long, what beside it, and where it executes
RESUMABLE_KEYS = {"rounds", "seeds", "methods", "out", "eval_every", "executor", "ray", "report", "tensorboard"}
# and within a part: which clients are measured (training computes the same values either way)
RESUMABLE_FIELDS = {"measure": {"clients"}}


class RunExistsError(RuntimeError):
    """The output folder already holds records and ``--resume`` was not given."""


# Config keys added since records were first written, at the value that does what the versions
# before them did: records without them resume as if they had them. Only keys listed here: for
# others (deadline_s, the fleet's speeds) the old records lack state the run needs.
ADDED_KEYS: dict[str, Any] = {"optimizer": {"schedule": "constant"}, "client_lines": "all"}


def with_added_keys(config: dict[str, Any]) -> dict[str, Any]:
    top = {key: value for key, value in ADDED_KEYS.items() if not isinstance(value, dict)}
    return {**top, **{part: {**ADDED_KEYS.get(part, {}), **values} if isinstance(values, dict) else values
                      for part, values in config.items()}}


def without_resumable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without what a resume may change."""
    return {part: {k: v for k, v in values.items() if k not in RESUMABLE_FIELDS.get(part, ())}
            if isinstance(values, dict) else values
            for part, values in config.items() if part not in RESUMABLE_KEYS}


def run_identity(cfg: SuiteConfig, method: str, params: Any, data: str) -> dict[str, Any]:
    """What a run's resume must share with its records: the method (two methods may share a
    parameter class), the data's content key, the config but its resumable keys, and the method's
    parameters."""
    return {"method": method, "data": data, "config": without_resumable(to_dict(cfg)),
            "method_params": dataclasses.asdict(params)}


def check_same_config(writer: RunWriter, cfg: SuiteConfig, identity: dict[str, Any],
                      built: dict[str, list[dict[str, Any]]]) -> None:
    """Resuming with another config would mix two experiments in one set of records. More rounds
    (unless the lr follows a schedule over the rounds), and other seeds or methods beside this
    run, are allowed: they leave this run's past intact. ``identity`` is the run's ``run_identity``;
    ``built``, the fleet and partition report its config gives now."""
    recorded = writer.read_manifest()
    if not recorded:
        raise RecordsError(f"cannot resume {writer.folder}: its {MANIFEST} is missing, so its records cannot be "
                           "matched to a config; rerun it with another --out")
    if recorded.get("method") != identity["method"]:
        raise ConfigError(f"cannot resume {writer.folder}: its records were made by method "
                          f"{recorded.get('method')!r} and its label now names {identity['method']!r}; give the "
                          "label its method back, or the new method a new label")
    recorded_data = recorded.get("data", {}).get("content")  # records from before it was recorded: not checked
    if recorded_data not in (None, identity["data"]):
        raise ConfigError(f"cannot resume {writer.folder}: its records were made on other data (content "
                          f"{recorded_data}, now {identity['data']}): the data set changed under an unchanged "
                          "suite (files rewritten in place?); rerun it with another --out")
    recorded["config"] = with_added_keys(recorded.get("config", {}))
    recorded_identity = {"config": without_resumable(recorded["config"]),
                         "method_params": recorded.get("method_params", {})}
    for part, old in recorded_identity.items():
        values = json.loads(json.dumps(identity[part]))
        if old != values:
            keys = sorted(k for k in values.keys() | old.keys() if old.get(k) != values.get(k))
            raise ConfigError(f"cannot resume {writer.folder}: its records were made with another "
                              f"{part.replace('_', ' ')} ({', '.join(keys)}); use the same suite and "
                              "--set values, or choose another --out")
    if cfg.optimizer.schedule != "constant" and recorded["config"].get("rounds") != cfg.rounds:
        raise ConfigError(f"cannot resume {writer.folder} with rounds = {cfg.rounds}: its learning rate "
                          f"follows a {cfg.optimizer.schedule} schedule over the rounds it was started "
                          f"with ({recorded['config'].get('rounds')})")
    # the same config can still give other clients: an edited trace, another harness version's sampler
    built = json.loads(json.dumps(built))
    for part, values in built.items():
        old = recorded.get(part)
        if old is None:
            continue
        # compare what was recorded: fields added by later versions are not a difference
        if len(old) != len(values) or any({k: new.get(k) for k in was} != was for was, new in zip(old, values)):
            raise ConfigError(f"cannot resume {writer.folder}: this config now gives another {part} than "
                              "the one its records were made with (an edited trace file, or a harness "
                              "version that partitions differently); rerun it with another --out")


def code_changed(writer: RunWriter, allow: bool) -> bool:
    """Whether the code that resumes a run differs from the code that wrote its last rounds (records
    from before code was recorded: not checked). A change is refused unless ``allow``: one run's
    rounds made by two programs mix two experiments (an edit that keeps shapes would resume silently)."""
    recorded, now_code = writer.read_manifest().get("code"), code_identity()
    if not recorded or recorded.get("source") == now_code["source"]:
        return False
    if not allow:
        same_commit = recorded.get("commit") == now_code["commit"]
        raise ConfigError(f"cannot resume {writer.folder}: its records were made by other code (commit "
                          f"{recorded.get('commit') or 'unknown'}, now {now_code['commit'] or 'unknown'}"
                          + (", with uncommitted edits on one side" if same_commit else "") +
                          "); rerun it with another --out, or pass --allow-code-change to continue it with this "
                          "code (the manifest then records both)")
    return True


def record_code_change(writer: RunWriter, after_round: int) -> None:
    """A resume allowed to change code: the manifest keeps which code made which rounds."""
    manifest = writer.read_manifest()
    history = manifest.get("code_history", [])
    history.append({**manifest["code"], "rounds_up_to": after_round})
    writer.write_manifest({**manifest, "code": code_identity(), "code_history": history})


def record_rounds_asked(writer: RunWriter, rounds: int) -> None:
    """A resume that adds rounds: the manifest then says how many the run is asked for, which the
    reports hold it to (a learning-rate schedule refuses other rounds, so its span stays)."""
    manifest = writer.read_manifest()
    if manifest.get("config", {}).get("rounds") != rounds:
        manifest.setdefault("config", {})["rounds"] = rounds
        writer.write_manifest(manifest)


def suite_manifest(cfg: SuiteConfig, folder: Path, runs: list[tuple[MethodEntry, int, str]],
                   resume: bool) -> dict[str, Any]:
    """suite.json's content. A resume may add seeds and methods, never drop a run the suite already
    had: runs and config of the earlier suite.json are kept beside the new ones."""
    listed = [{"label": e.label, "method": e.method, "seed": s, "dir": d} for e, s, d in runs]
    config = to_dict(cfg)
    earlier = read_json_file(folder / "suite.json") if resume else {}
    if earlier:
        dirs = {r["dir"] for r in listed}
        kept = [r for r in earlier.get("runs", []) if isinstance(r, dict) and isinstance(r.get("dir"), str)
                and SAFE_NAME.fullmatch(r["dir"])]  # a run is a folder of this suite, never a path out of it
        listed = [r for r in kept if r["dir"] not in dirs] + listed
        old = earlier.get("config", {})
        config["seeds"] = sorted({*old.get("seeds", []), *config["seeds"]})
        labels = {m["label"] for m in config["methods"]}
        config["methods"] = [m for m in old.get("methods", []) if m.get("label") not in labels] + config["methods"]
        config["rounds"] = max(old.get("rounds", 0), config["rounds"])
    commits = [c for c in (*earlier.get("git_commits", [earlier.get("git_commit")]), git_commit()) if c]
    return {"suite": cfg.name, "config": config, "versions": versions(), "git_commit": git_commit(),
            "git_commits": list(dict.fromkeys(commits)),  # every commit that ran the suite, oldest first
            "started": earlier.get("started", now()), "runs": listed}
