"""``python -m reports SUITE_DIR [SUITE_DIR ...] [-o OUT] [--target T] [--allow-mixed] [--labels A,B]``: render a
suite's report, or one report comparing several suites."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.load import ReportError
from reports.render import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Render figures, summary.md, summary.csv and index.html from suite folders' records.",
    )
    parser.add_argument("suite_dirs", type=Path, nargs="+", metavar="SUITE_DIR",
                        help="a suite folder (suite.json and one folder per run); several: one report comparing them")
    parser.add_argument("-o", "--out", type=Path,
                        help="output folder (default: SUITE_DIR/report; required with several suites)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare suites even when their data set or model differ")
    parser.add_argument("--target", type=float,
                        help="target accuracy as a fraction, for time to target (default: the suite's "
                             "report.target, else 0.9)")
    parser.add_argument("--labels", type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                        help="draw only these labels, e.g. fedavg,exclusive,neulite (default: every label)")
    args = parser.parse_args(argv)
    if args.target is not None and not 0 < args.target <= 1:
        parser.error(f"--target must be a fraction in (0, 1], e.g. 0.9; got {args.target}")
    for stream in (sys.stdout, sys.stderr):  # a path that is not UTF-8 is printed escaped, not a traceback
        stream.reconfigure(errors="backslashreplace")
    try:
        report = render(args.suite_dirs, args.out, args.target, args.allow_mixed, args.labels)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the output folder read-only, full, a file, a name too long...
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: cannot write the report{where}: {err.strerror or err}", file=sys.stderr)
        return 1
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {len(report.files)} files to {report.out}; open {report.out / 'index.html'}")
    return 0
