"""The job of one run on the nodes of a SLURM cluster (submitted by launcher.py with submitit).

Each task (one a node) trains and evaluates its run as a local comparison does
(runs.train_then_evaluate), the output in RUN/compare.log (the first node's) or
RUN/compare-nodeN.log. The stop signals reach the run's process (interruption.py), which saves
its state at the end of its update and exits:

- SIGUSR2, SLURM's warning before the time limit (sbatch --signal=USR2@90): the first task then
  requeues the job itself (scontrol requeue), at most MAX_TIME_LIMIT_REQUEUES times a run;
- SIGTERM, SLURM ending the job (a preemption within its partition's GraceTime, a cancel, the
  time limit reached): the job waits for SLURM to end it, which gives the ending its own name
  (a preempted job is requeued by a partition with PreemptMode=REQUEUE, else resubmitted by the
  next compare.sh call; a cancelled one is not).

Each stop is a line of RUN/slurm-events.jsonl (the job, the signal, the time).
"""

import os
import signal
import subprocess
import time
from typing import Optional

from ...common import RecipeError, RunInterrupted
from ...run.interruption import PassedOn
from ...run.runs import Run, train_then_evaluate
from ...run.command import rendezvous_flags

MAX_TIME_LIMIT_REQUEUES = 10  # requeues at the time limit before a run is given up as too long for its limit
WAIT_FOR_END = 900  # seconds a job stopped by SIGTERM waits for SLURM to end it (the grace time is shorter)
PORTS = (20000, 10000)  # a multi-node job's port: first + job id modulo the count, below Linux's ephemeral range


def job_port(job_id: str) -> int:
    """The port every node of a multi-node job meets on (fairseq's --distributed-port): the same
    on each node of the job, another for the next job id."""
    first, count = PORTS
    return first + int(job_id.split("_")[0]) % count


def this_job() -> str:
    """The job's id as squeue and scontrol name it: ARRAY_TASK for a task of an array."""
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def record_event(run: Run, event: dict) -> None:
    run.folder.add_slurm_event({"job_id": this_job(), "time": time.time(), **event})


class TrainAndEvaluate:
    """The job of one run (a pickled callable for submitit)."""

    def __init__(self, run: Run, args):
        self.run, self.args = run, args

    def __call__(self) -> None:
        args, node = self.args, int(os.environ.get("SLURM_NODEID", "0"))
        threads = {} if args.gpus_per_node else {"OMP_NUM_THREADS": os.environ.get("SLURM_CPUS_PER_TASK", "1")}
        where = (["--distributed-port", str(job_port(os.environ["SLURM_JOB_ID"]))] if args.nodes > 1
                 else rendezvous_flags(args.gpus_per_node))
        log = self.run.folder.compare_log(node)
        signals = PassedOn()
        try:
            train_then_evaluate(self.run, args, args.gpus_per_node, threads, where, log, signals.started)
        except RunInterrupted:
            self.stopped(signals.ending(), first_task=node == 0)

    def stopped(self, number: Optional[int], first_task: bool) -> None:
        """After the run's process stopped on `number` with its state saved: requeue at the time
        limit's warning, else wait for SLURM to end the job."""
        name = signal.Signals(number).name if number else "a signal"
        if first_task:
            record_event(self.run, {"event": "stopped", "signal": name})
        print(f"[slurm] job {this_job()}: the run stopped on {name}, its state saved", flush=True)
        if number == signal.SIGUSR2 and first_task:
            limits = sum(event.get("signal") == "SIGUSR2" for event in self.run.folder.slurm_events())
            if limits > MAX_TIME_LIMIT_REQUEUES:
                raise RecipeError(f"{self.run.save_dir.name} reached its time limit {limits} times: give a longer "
                                  "--time (it resumes where it stopped)")
            subprocess.run(["scontrol", "requeue", this_job()], check=True, timeout=60)
            print(f"[slurm] requeued job {this_job()} ({limits} time limit(s) so far)", flush=True)
        time.sleep(WAIT_FOR_END)
        raise RecipeError(f"{self.run.save_dir.name} stopped on {name} and SLURM did not end the job within "
                          f"{WAIT_FOR_END} s")
