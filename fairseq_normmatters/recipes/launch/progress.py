"""What a launcher says while its runs go and when they end: a line per run start and end with
the time left, then the report (the tables and curves, report/collect.py) and its verdict line."""

import threading
import time
from pathlib import Path
from typing import List

from ..report.collect import write_table
from ..report.verdict import verdict_line
from ..run.runs import Run


def minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """One line per run start and end: run i of n, the time so far and the time left, estimated
    from the runs finished in this call."""

    def __init__(self, total: int, parallel: int):
        self.total, self.parallel, self.started = total, parallel, time.monotonic()
        self.durations, self.waiting, self.lock = [], 0, threading.Lock()

    def finished(self, seconds: float) -> None:
        """A run ended after `seconds`: one fewer to wait for, one more duration to estimate from."""
        with self.lock:
            self.durations.append(seconds)
            self.waiting -= 1

    def say(self, run: Run, what: str) -> None:
        with self.lock:
            elapsed = time.monotonic() - self.started
            left = ""
            if self.durations and self.waiting:
                mean = sum(self.durations) / len(self.durations)
                left = f", about {minutes(mean * self.waiting / self.parallel)} left"
            print(f"[compare] {run.number}/{self.total} {run.save_dir.name}: {what} "
                  f"({minutes(elapsed)} so far{left})", flush=True)


def write_results(runs: List[Run], out: Path, progress: Progress) -> None:
    """OUT/results.md and OUT/curves.png from every run, then the verdict."""
    results, curves = out / "results.md", out / "curves.png"
    collected = write_table([run.save_dir for run in runs], results, plot=curves).runs
    print(f"[compare] done in {minutes(time.monotonic() - progress.started)}: table {results}, curves {curves}",
          flush=True)
    print(verdict_line(collected), flush=True)
