"""What a record line must hold, keys and types: one check that the harness (which lines a resume
counts) and reports (which lines they read) share, so a line that fails it (a torn write, a hand
edit, a round number given as text) is torn for both. It imports nothing, so reports can use it
without the training code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def number(value: Any) -> bool:
    return (integer(value) or isinstance(value, float)) and math.isfinite(value)


def text(value: Any) -> bool:
    return isinstance(value, str)


def mapping(value: Any) -> bool:
    return isinstance(value, dict)


def flag(value: Any) -> bool:
    return isinstance(value, bool)


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def counting(value: Any) -> bool:
    return integer(value) and value >= 0


def fraction(value: Any) -> bool:
    return number(value) and 0 <= value <= 1


RUN = {"label": text, "method": text, "seed": integer, "round": lambda v: integer(v) and v >= 1}
# key -> check; the first group every line holds, the rest are checked where present
ROUND = {
    "required": {**RUN, "accuracy": optional(fraction)},  # what records of every version hold
    "optional": {"loss": optional(number), "devices": counting, "participated": counting, "evals": mapping,
                 "eligible": counting, "offered": counting, "selected": counting,
                 "excluded": counting, "stragglers": counting, "failed": counting, "peak_tensor": optional(counting),
                 "peak_estimate": optional(counting), "train_time": number, "round_time": number,
                 "wall_time": number, "device_time": number, "device_wall_time": number, "bytes_up": counting,
                 "bytes_down": counting},  # a method's own round fields (NeuLite's stage) are its own
}
CLIENT = {
    "required": {**RUN, "device": counting, "status": text},
    "optional": {"budget": counting, "reason": optional(text), "task": optional(text), "estimate": optional(mapping),
                 "need": counting, "memory": optional(mapping), "measured": flag, "over_budget": flag,
                 "samples": counting, "steps": counting, "train_loss": optional(number), "train_time": number,
                 "bytes_up": counting, "bytes_down": counting, "device_time": number, "compute_time": number,
                 "comm_time": number, "flops": number},
}
SCHEMAS = {"rounds.jsonl": ROUND, "clients.jsonl": CLIENT}


def line_problem(row: Any, schema: dict[str, dict[str, Check]]) -> str | None:
    """Why ``row`` is not a record line of ``schema`` (a missing key, a wrong type), or None."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [key for key in schema["required"] if key not in row]
    if missing:
        return f"no {', '.join(missing)}"
    checks = {**schema["optional"], **schema["required"]}
    wrong = [key for key, check in checks.items() if key in row and not check(row[key])]
    return f"{', '.join(wrong)}: wrong type or value" if wrong else None
