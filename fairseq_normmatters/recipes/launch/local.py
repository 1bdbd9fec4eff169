"""compare.sh's local launcher: the runs on this machine, --parallel P of them side by side, each
on its share of the CPU cores (OMP_NUM_THREADS) or of the visible GPUs (CUDA_VISIBLE_DEVICES)."""

import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from ..common import RecipeError, RunInterrupted
from ..run import lock as run_lock
from ..run.evaluate import outcome
from ..run.interruption import PassedOn
from ..run.batch import batch_text, effective_batch
from ..run.command import cpu_not_chosen, rendezvous_flags, visible_gpus
from ..run.runs import Run, check_commands, holding_out, train_then_evaluate
from .progress import Progress, minutes, write_results


@dataclass
class Share:
    """What one of the parallel slots runs on: its environment and its number of GPUs."""
    environment: Dict[str, str] = field(default_factory=dict)
    gpus: int = 0


def machine_shares(parallel: int, gpus: int, cores: int, per_run: int = 0) -> List[Share]:
    """The machine cut into `parallel` shares: GPUs (each share its own CUDA_VISIBLE_DEVICES, at
    most `per_run` of them where that is given) when there are any, else CPU cores (OMP_NUM_THREADS)."""
    if gpus == 0:
        threads = str(max(1, cores // parallel))
        return [Share({"OMP_NUM_THREADS": threads}) for _ in range(parallel)] if parallel > 1 else [Share()]
    if gpus < parallel:
        raise RecipeError(f"--parallel {parallel} needs at least {parallel} GPUs; {gpus} are visible")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus)))).split(",")[:gpus]
    per_share = min(per_run, gpus // parallel) if per_run else gpus // parallel
    return [Share({"CUDA_VISIBLE_DEVICES": ",".join(visible[i * per_share:(i + 1) * per_share])}, per_share)
            for i in range(parallel)]


def train_and_evaluate(run: Run, args, share: Share, progress: Progress, signals: PassedOn) -> None:
    """train_then_evaluate on `share` of the machine, its start and end said by `progress`, the
    stop signals this process gets passed on to its training."""
    started = time.monotonic()
    batch = effective_batch(run.command(args, share.gpus), share.gpus)
    progress.say(run, f"training, batch {batch_text(batch)}")
    train_then_evaluate(run, args, share.gpus, share.environment, rendezvous_flags(share.gpus), started=signals.started)
    took = time.monotonic() - started
    progress.finished(took)
    results = run.folder.results()
    progress.say(run, f"done in {minutes(took)}, {outcome(results)}")


def run_all(runs: List[Run], args, shares: List[Share], progress: Progress) -> None:
    """Each run in `runs` trained and evaluated, `args.parallel` at a time, each on a share; the
    first failure stops new runs from starting, lets the running ones end, and is raised. A stop
    signal (SIGTERM, SIGINT, SIGUSR2) is passed on to the runs training, which save their state at
    the end of their update: RunInterrupted."""
    free, queue, failure = list(shares), list(runs), None
    progress.waiting = len(runs)
    signals = PassedOn()
    try:
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            running = {}
            while queue or running:
                while queue and free and failure is None and not signals.received:
                    run, share = queue.pop(0), free.pop(0)
                    running[pool.submit(train_and_evaluate, run, args, share, progress, signals)] = share
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    free.append(running.pop(future))
                    if future.exception() is not None and failure is None:
                        failure = future.exception()
    finally:
        signals.restore()
    if failure is None and queue:  # a stop signal came between runs
        failure = RunInterrupted(f"stopped on {signal.Signals(signals.received[0]).name} before the next run began; "
                                 "rerun the same compare.sh command to go on")
    if failure is not None:
        raise failure


def compare_locally(runs: List[Run], args) -> None:
    """compare.sh's main on this machine: check what the runs were begun as, train and evaluate
    those without results, then the table."""
    shares = machine_shares(args.parallel, visible_gpus(), len(os.sched_getaffinity(0)),
                            1 if args.benchmark == "iwslt14" else 0)  # IWSLT14: fairseq's one-GPU benchmark
    with holding_out(Path(args.out), wait=False):
        train_what_is_left(runs, args, shares)


def train_what_is_left(runs: List[Run], args, shares: List[Share]) -> None:
    refuse_runs_trained_elsewhere([run for run in runs if not run.folder.is_evaluated()])
    check_commands(runs, args, shares[0].gpus)  # may move runs aside (--retrain): "done" is read after it
    done = [run for run in runs if run.folder.is_evaluated()]
    if cpu_not_chosen(shares[0].gpus, args.extra):
        print("[compare] no GPU here and none expected (torch without CUDA): the runs train on the CPU (--cpu)")
    progress = Progress(len(runs), args.parallel)
    for run in done:
        progress.say(run, "done before")
    run_all([run for run in runs if run not in done], args, shares, progress)
    write_results(runs, Path(args.out), progress)


def refuse_runs_trained_elsewhere(runs: List[Run]) -> None:
    """RecipeError naming the runs of `runs` that another process trains now (run/lock.py: a
    training left running by a compare.sh that was killed, a train_*.sh), before anything starts."""
    held = [f"  {run.save_dir.name}: {holder}" for run in runs if (holder := run_lock.holder(run.save_dir))]
    if held:
        raise RecipeError(f"{len(held)} run(s) in this OUT are being trained by other processes:\n" + "\n".join(held) +
                          "\nnothing was started: wait for them to end (then rerun this command: their results are "
                          "kept), or stop them with kill -TERM PID (they save their state at the end of their update)")
