"""``python -m reports SUITE_DIR [-o OUT] [--target 0.9]``: render a suite's report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.load import ReportError
from reports.render import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Render figures, summary.md and index.html from a suite folder's records.",
    )
    parser.add_argument("suite_dir", type=Path, help="the suite folder (suite.json and one folder per run)")
    parser.add_argument("-o", "--out", type=Path, help="output folder (default: SUITE_DIR/report)")
    parser.add_argument("--target", type=float, default=0.9,
                        help="target accuracy as a fraction, for time to target (default: 0.9)")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error(f"--target must be a fraction in (0, 1], e.g. 0.9; got {args.target}")
    try:
        report = render(args.suite_dir, args.out, args.target)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {len(report.files)} files to {report.out}; open {report.out / 'index.html'}")
    return 0
