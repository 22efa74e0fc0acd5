"""What a suite run tells its user while it goes: one suite-level progress bar (rounds done over all
runs, runs done, time left), each run's per-round lines in its folder's ``run.log`` (on the console
too with ``--verbose``), and no terminal escape codes where the output is not a terminal."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from harness.records import open_append

T = TypeVar("T")
Log = Callable[[str], None]  # where a run or a command says something: print, a test's list
RUN_LOG = "run.log"  # a run's progress lines, beside its records
POLL_S = 0.5  # how often the bar reads the rounds recorded


class RunLog:
    """A run's lines: each appended to ``<run folder>/run.log``; the console gets the lines that
    matter (``log``) and the per-round ones only when ``verbose``."""

    def __init__(self, folder: Path, console: Log, verbose: bool) -> None:
        self.path, self.console, self.verbose = folder / RUN_LOG, console, verbose

    def _append(self, line: str) -> None:
        if self.path.parent.is_dir():  # the run's folder exists once the run has started
            with open_append(self.path) as f:
                f.write(line + "\n")

    def __call__(self, line: str) -> None:
        self._append(line)
        self.console(line)

    def round(self, line: str) -> None:
        self._append(line)
        if self.verbose:
            self.console(line)


class RoundCounter:
    """Rounds a run folder holds (its rounds.jsonl's complete lines), read on from where the last
    count stopped: a poll costs what was appended since, not the whole file."""

    def __init__(self, folder: Path) -> None:
        self.path, self.offset, self.count = folder / "rounds.jsonl", 0, 0

    def __call__(self) -> int:
        try:
            with self.path.open("rb") as f:
                if f.seek(0, 2) < self.offset:  # rewritten (a resume truncated a torn round): count again
                    self.offset = self.count = 0
                f.seek(self.offset)
                new = f.read()
        except FileNotFoundError:
            return 0
        complete = new.rfind(b"\n") + 1  # a line still being written is counted once whole
        self.offset += complete
        self.count += new.count(b"\n", 0, complete)
        return self.count


class SuiteProgress:
    """Rounds done over all of a suite's runs, read from their records every ``POLL_S`` seconds (the
    same for every executor: Ray's runs write them in other processes), with runs done and the time
    left. On a terminal a tqdm bar on stderr; elsewhere (a log file, CI) no bar, and ``run_done``
    prints one plain line per run with the same counts."""

    def __init__(self, folders: list[Path], rounds: int, log: Log, bar: bool = True, stream=None) -> None:
        self.rounds, self.log = rounds, log
        self.counters = [RoundCounter(folder) for folder in folders]
        self.runs = len(folders)
        self._counting = threading.Lock()  # the poller and run_done count from two threads
        self.stream = stream if stream is not None else sys.stderr
        self.start, self.runs_done = time.perf_counter(), 0
        self.first = self.done_rounds()  # a resume starts with rounds already recorded
        size = shutil.get_terminal_size()  # 80 x 24 where a terminal reports no size (tqdm would draw nothing)
        self.bar = tqdm(total=self.runs * rounds, initial=self.first, unit="round", file=self.stream,
                        disable=not (bar and self.stream.isatty()), desc="suite", ncols=size.columns,
                        nrows=size.lines)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def done_rounds(self) -> int:
        with self._counting:
            return sum(min(count(), self.rounds) for count in self.counters)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._update()

    def _update(self) -> None:
        done = self.done_rounds()
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(f"{self.runs_done}/{self.runs} runs", refresh=False)

    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before a round is done)."""
        done = self.done_rounds() - self.first
        left = self.runs * self.rounds - self.first - done
        return None if done <= 0 else (time.perf_counter() - self.start) * left / done

    def run_done(self, line: str) -> None:
        """A run has ended (``line`` says how): counted, and said with the suite's progress."""
        self.runs_done += 1
        self._update()
        eta = self.eta()
        left = "" if eta is None or self.runs_done == self.runs else f", about {eta / 60:.1f} min left"
        self.write(f"{line} ({self.runs_done}/{self.runs} runs, {time.perf_counter() - self.start:.0f} s"
                   f"{left})")

    def write(self, line: str) -> None:
        """A line that does not break the bar."""
        if self.bar.disable:
            self.log(line)
        else:
            self.bar.write(line, file=self.stream)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


def counted(items: Iterable[T], what: str, stream=None) -> Iterator[T]:
    """``items``, with a bar on a terminal (stderr) while a command works through them (``memory``'s
    tasks, ``tables``' models, ``overhead``'s repeats); elsewhere one plain line saying how many."""
    stream = stream if stream is not None else sys.stderr
    total = len(items) if isinstance(items, Sized) else None
    if not stream.isatty():
        print(f"{what}: {total if total is not None else 'some'} to do", file=stream, flush=True)
        yield from items
        return
    size = shutil.get_terminal_size()
    with tqdm(items, total=total, desc=what, file=stream, ncols=size.columns, nrows=size.lines,
              leave=False) as bar:
        yield from bar
