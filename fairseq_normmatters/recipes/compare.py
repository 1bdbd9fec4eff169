"""The paper's comparison in one command: every configuration x seed trained, evaluated, collected.

    scripts/compare.sh {wmt14,iwslt14} PREPARED OUT [--seeds N] [--configs C ...] [--parallel P]
                       [-- fairseq-train args]

For each configuration (default: the benchmark's Transformer l2, l1, bwn, none and the LSTM
nonorm, bwn) and each seed 1..N (default 3) it trains OUT/CONFIG-seedS as train_{benchmark}.sh
does with --seed S, evaluates it as evaluate.sh does (WMT14: beam 4, lenpen 0.6, the last 5
checkpoints averaged; IWSLT14: beam 5, lenpen 1, as fairseq's example) and finally writes
OUT/results.md and OUT/curves.png with collect_results.py: the seeds' means and spreads, each
configuration's difference from its baseline with sacreBLEU's paired bootstrap test, and the
paper's differences. A run whose results.json exists is skipped; one that stopped half-way
resumes from its checkpoint_last.pt (fairseq-train's own resume); rerun the same command after
any interruption. Arguments after -- go to every fairseq-train (e.g. a shorter schedule).

--parallel P runs P runs side by side, each with its share of the machine: 1/P of the CPU
cores (OMP_NUM_THREADS) or of the visible GPUs (CUDA_VISIBLE_DEVICES). The screen gets one line
per run when it starts and when it ends (with the time so far and an estimate of the rest);
each run's whole output goes to OUT/CONFIG-seedS/compare.log, whose last lines are shown if a
step fails.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from . import STEP_PREFIX, RecipeError, check_not_half_prepared, run_main
from .collect import main as collect
from .train import BENCHMARKS, start_run, visible_gpus

DEFAULT_CONFIGS = ("transformer_l2", "transformer_l1", "transformer_bwn", "transformer_none", "lstm_nonorm",
                   "lstm_bwn")
EVALUATION = {"wmt14": ["--average", "5", "--beam", "4", "--lenpen", "0.6"],
              "iwslt14": ["--average", "5", "--beam", "5", "--lenpen", "1.0"]}
LOG_TAIL = 30  # lines of a failed step's log shown on the screen


def parse_args(argv):
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="compare.sh", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=tuple(BENCHMARKS))
    parser.add_argument("prepared", help="made by scripts/prepare_{benchmark}_de_en.sh")
    parser.add_argument("out", help="one folder per configuration and seed, and the results")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per configuration")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--parallel", type=int, default=1, metavar="P",
                        help="runs side by side, each on 1/P of the CPU cores or GPUs (default 1)")
    args = parser.parse_args(argv)
    args.extra = extra
    unknown = [c for c in args.configs if c not in BENCHMARKS[args.benchmark][0]]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)} for {args.benchmark}; known: "
                     f"{', '.join(BENCHMARKS[args.benchmark][0])}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: needs at least 1")
    if args.parallel < 1:
        parser.error(f"--parallel {args.parallel}: needs at least 1")
    return args


@dataclass
class Run:
    number: int
    config: str
    seed: int
    save_dir: Path

    @property
    def log(self) -> Path:
        return self.save_dir / "compare.log"


@dataclass
class Share:
    """What one of the parallel slots runs on: its environment and its number of GPUs."""
    environment: Dict[str, str] = field(default_factory=dict)
    gpus: int = 0


def machine_shares(parallel: int, gpus: int, cores: int) -> List[Share]:
    """The machine cut into `parallel` shares: GPUs (each share its own CUDA_VISIBLE_DEVICES) when
    there are any, else CPU cores (OMP_NUM_THREADS)."""
    if gpus == 0:
        threads = str(max(1, cores // parallel))
        return [Share({"OMP_NUM_THREADS": threads}) for _ in range(parallel)] if parallel > 1 else [Share()]
    if gpus < parallel:
        raise RecipeError(f"--parallel {parallel} needs at least {parallel} GPUs; {gpus} are visible")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus)))).split(",")[:gpus]
    per_share = gpus // parallel
    return [Share({"CUDA_VISIBLE_DEVICES": ",".join(visible[i * per_share:(i + 1) * per_share])}, per_share)
            for i in range(parallel)]


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


def run_logged(run: Run, command: List[str], environment: Dict[str, str]) -> None:
    """`command` with its output appended to the run's log; a failure raises RecipeError naming
    the step that failed (the last one_run.announce line of the log) and showing the log's end."""
    with run.log.open("a", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **environment})
    if result.returncode != 0:
        lines = run.log.read_text(encoding="utf-8", errors="replace").splitlines()
        steps = [line[len(STEP_PREFIX):].split(":")[0] for line in lines if line.startswith(STEP_PREFIX)]
        tail = "\n".join(lines[-LOG_TAIL:])
        raise RecipeError(f"{steps[-1] if steps else 'the run'} {run.save_dir.name} exited with "
                          f"{result.returncode}; the last lines of {run.log}:\n{tail}\n"
                          "rerun the same compare.sh command to resume from there")


def train_and_evaluate(run: Run, args, share: Share, progress: Progress) -> None:
    """fairseq-train, then the evaluation, in one process (one_run.py) on `share` of the machine."""
    started = time.monotonic()
    progress.say(run, "training")
    train = start_run(run.config, args.prepared, run.save_dir, [*args.extra, "--seed", str(run.seed)],
                      share.gpus, args.benchmark)
    run_logged(run, [sys.executable, "-m", "fairseq_normmatters.recipes.one_run", str(run.save_dir),
                     str(args.prepared), *EVALUATION[args.benchmark], "--", *train], share.environment)
    took = time.monotonic() - started
    progress.finished(took)
    bleu = json.loads((run.save_dir / "results.json").read_text())["bleu"]
    progress.say(run, f"done in {minutes(took)}, BLEU {bleu}")


def run_all(runs: List[Run], args, progress: Progress) -> None:
    """Each run in `runs` trained and evaluated, `args.parallel` at a time; the first failure
    stops new runs from starting, lets the running ones end, and is raised."""
    shares = machine_shares(args.parallel, visible_gpus(), len(os.sched_getaffinity(0)))
    free, queue, failure = list(shares), list(runs), None
    progress.waiting = len(runs)
    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        running = {}
        while queue or running:
            while queue and free and failure is None:
                run, share = queue.pop(0), free.pop(0)
                running[pool.submit(train_and_evaluate, run, args, share, progress)] = share
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                free.append(running.pop(future))
                if future.exception() is not None and failure is None:
                    failure = future.exception()
    if failure is not None:
        raise failure


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_not_half_prepared(args.prepared)
    out = Path(args.out)
    runs = [Run(number, config, seed, out / f"{config}-seed{seed}") for number, (seed, config) in enumerate(
        ((seed, config) for seed in range(1, args.seeds + 1) for config in args.configs), 1)]
    progress = Progress(len(runs), args.parallel)
    done = [run for run in runs if (run.save_dir / "results.json").is_file()]
    for run in done:
        progress.say(run, "done before")
    run_all([run for run in runs if run not in done], args, progress)
    results, curves = out / "results.md", out / "curves.png"
    collect([*(str(run.save_dir) for run in runs), "--out", str(results), "--plot", str(curves), "--quiet"])
    print(f"[compare] done in {minutes(time.monotonic() - progress.started)}: table {results}, curves {curves}",
          flush=True)


if __name__ == "__main__":
    run_main(main, "compare.sh")
