"""compare.sh --launcher slurm: each run of the comparison one SLURM job, submitted with submitit.

A job trains and evaluates its run as a local comparison does (runs.train_then_evaluate, the
output in RUN/compare.log). The jobs of one call are one job array, at most --max-jobs running at
once. A job stopped by its time limit (SLURM signals it 90 s before) or preempted is requeued
(submitit's Checkpointable, at most MAX_REQUEUES times at the limit) and resumes from the run's
checkpoint_last.pt; a job that fails (a bad flag, a NaN) is left failed, and said so with the
end of its log. RUN/slurm.json keeps the run's job id and submitit's logs (OUT/slurm/).

Every call prints each run's state (queued, running, done, failed) from squeue and the runs'
folders, submits the runs that are neither done nor queued nor running, and returns; with --wait
it follows them, a line per run as it starts and ends. The table and the plot are written once
every run is done. A run over several nodes (--nodes) starts one task a node and fairseq's own
SLURM set-up spawns a process a GPU, with a port of the job's own; only the first task evaluates.
"""

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import submitit

from . import RecipeError, write_text_atomically
from .evaluate import outcome
from .runs import Progress, Run, check_commands, log_tail, minutes, train_then_evaluate
from .table import write_results
from .train import BENCHMARKS, batch_text, effective_batch, rendezvous_flags

MAX_REQUEUES = 10  # requeues at the time limit before a run is given up as too long for its limit
CPUS_PER_GPU = 4  # a job's CPUs when --cpus-per-run is not given
PORTS = (20000, 10000)  # a multi-node job's port: first + job id modulo the count, below Linux's ephemeral range
# squeue's states of a job that has not ended, as a run's state
ACTIVE = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
          "CONFIGURING": "queued", "RESV_DEL_HOLD": "queued", "RUNNING": "running", "COMPLETING": "running",
          "SUSPENDED": "running", "STOPPED": "running", "SIGNALING": "running", "STAGE_OUT": "running",
          "RESIZING": "running"}


def add_slurm_options(parser) -> None:
    slurm = parser.add_argument_group("--launcher slurm (recipes/slurm.py)")
    slurm.add_argument("--partition", help="the partition the jobs go to (default: the cluster's)")
    slurm.add_argument("--gpus-per-node", type=int, metavar="G",
                       help="GPUs of each node of a run (default: the benchmark's reference, 8 for WMT14 and "
                            "1 for IWSLT14; 0 with --cpu after --)")
    slurm.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes of a run (default 1)")
    slurm.add_argument("--cpus-per-run", type=int, metavar="C",
                       help="CPUs of each node of a run (default: 4 a GPU; 1 for a CPU run)")
    slurm.add_argument("--mem", help="memory of each node of a run, as sbatch --mem takes it (e.g. 64G)")
    slurm.add_argument("--time", default="24:00:00",
                       help="a job's time limit, [D-]HH:MM:SS or minutes (default 24:00:00); a run that "
                            "needs longer is requeued at the limit and resumes")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="KEY[=VALUE]",
                       help="another sbatch option, without its dashes (e.g. --sbatch account=nlp "
                            "--sbatch qos=high); repeatable")
    slurm.add_argument("--max-jobs", type=int, default=64, metavar="J",
                       help="at most J jobs of one submission at once (default 64)")
    slurm.add_argument("--wait", action="store_true",
                       help="wait for the jobs, one line per run as it starts and ends, then write the table")
    slurm.add_argument("--poll", type=float, default=30, metavar="S",
                       help="with --wait, ask SLURM for the jobs' states every S seconds (default 30)")


def check_slurm_options(parser, args) -> None:
    """parser.error for an option of --launcher slurm that SLURM would refuse or misread."""
    if args.launcher != "slurm":
        given = [f"--{name.replace('_', '-')}" for name in ("partition", "gpus_per_node", "cpus_per_run", "mem")
                 if getattr(args, name) is not None]
        given += [flag for flag, used in (("--nodes", args.nodes != 1), ("--sbatch", args.sbatch),
                                          ("--wait", args.wait)) if used]
        if given:
            parser.error(f"{', '.join(given)}: only with --launcher slurm")
        return
    if args.gpus_per_node is None:
        args.gpus_per_node = 0 if "--cpu" in args.extra else BENCHMARKS[args.benchmark][2]
    for name, least in (("gpus_per_node", 0), ("nodes", 1), ("cpus_per_run", 1), ("max_jobs", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            parser.error(f"--{name.replace('_', '-')} {value}: needs at least {least}")
    if args.nodes > 1 and args.gpus_per_node == 0:
        parser.error(f"--nodes {args.nodes}: a run over several nodes needs GPUs (--gpus-per-node); "
                     "fairseq trains on one CPU process")
    args.time_minutes = time_minutes(args.time)
    if args.time_minutes is None:
        parser.error(f"--time {args.time!r}: give minutes (e.g. 90) or [D-]HH:MM:SS (e.g. 1-12:00:00)")
    if args.poll <= 0:
        parser.error(f"--poll {args.poll}: needs a positive number of seconds")


def time_minutes(limit: str):
    """Minutes (rounded up) of a time limit as sbatch reads it: M, M:S, H:M:S, D-H, D-H:M or
    D-H:M:S; None for anything else or for no time at all."""
    days, clock = limit.split("-", 1) if "-" in limit else ("0", limit)
    parts = clock.split(":")
    if len(parts) > 3 or not all(part.isdigit() for part in [days, *parts]):
        return None
    n = [int(part) for part in parts]
    if "-" in limit:
        hours, minutes_, seconds = (n + [0, 0])[:3]
    else:
        hours, minutes_, seconds = ([0] + n + [0])[:3] if len(n) < 3 else n
    total = int(days) * 24 * 60 + hours * 60 + minutes_ + (seconds > 0)
    return total or None



class TrainAndEvaluate(submitit.helpers.Checkpointable):
    """The job of one run. Requeued as it is (Checkpointable.checkpoint) at a time limit or a
    preemption: fairseq-train finds the run's checkpoint_last.pt and resumes."""

    def __init__(self, run: Run, args):
        self.run, self.args = run, args

    def __call__(self) -> None:
        args, node = self.args, int(os.environ.get("SLURM_NODEID", "0"))
        threads = {} if args.gpus_per_node else {"OMP_NUM_THREADS": os.environ.get("SLURM_CPUS_PER_TASK", "1")}
        where = (["--distributed-port", str(job_port(os.environ["SLURM_JOB_ID"]))] if args.nodes > 1
                 else rendezvous_flags(args.gpus_per_node))
        log = self.run.log if node == 0 else self.run.save_dir / f"compare-node{node}.log"
        train_then_evaluate(self.run, args, args.gpus_per_node, threads, where, log)


def job_port(job_id: str) -> int:
    """The port every node of a multi-node job meets on (fairseq's --distributed-port): the same
    on each node of the job, another for the next job id."""
    first, count = PORTS
    return first + int(job_id.split("_")[0]) % count


def record_path(run: Run) -> Path:
    return run.save_dir / "slurm.json"


def job_record(run: Run):
    """{"job_id", "stdout", "stderr", "submitted"} of the run's last job, or None."""
    path = record_path(run)
    return json.loads(path.read_text()) if path.is_file() else None


def active_jobs() -> Dict[str, str]:
    """{job id: squeue state} of this user's jobs that have not ended (array tasks one by one)."""
    result = subprocess.run(["squeue", "--noheader", "--array", "--me", "--format=%i|%T"], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RecipeError(f"squeue failed ({result.stderr.strip() or result.returncode}): is this a SLURM "
                          "cluster's login node (SLURM_CONF, the controller up)?")
    return parse_squeue(result.stdout)


def parse_squeue(text: str) -> Dict[str, str]:
    return dict(line.strip().split("|", 1) for line in text.splitlines() if "|" in line)


def run_state(run: Run, active: Dict[str, str]):
    """(state, job record): "done" (its results.json), "queued" or "running" (its job in
    `active`), "failed" (its job ended without results) or "new" (no job yet)."""
    record = job_record(run)
    if (run.save_dir / "results.json").is_file():
        return "done", record
    if record is None:
        return "new", None
    return ACTIVE.get(active.get(record["job_id"], ""), "failed"), record


def failure_text(run: Run, record) -> str:
    """Why a run's job ended without results: the end of the run's log (else of the job's), and
    where SLURM's log of the job is."""
    log = run.log if run.log.is_file() else Path(record["stderr"])
    return (f"the job ended without results; the last lines of {log}:\n{log_tail(log)}\n"
            f"(SLURM's log of the job: {record['stderr']})")


def state_line(run: Run, state: str, record) -> str:
    if state == "done":
        results = json.loads((run.save_dir / "results.json").read_text())
        return f"done, {outcome(results)}"
    if state == "failed":
        return f"failed (job {record['job_id']}): {failure_text(run, record)}"
    return f"{state} (job {record['job_id']}, log {run.log})"


def executor(args):
    """A submitit SlurmExecutor with compare.sh's options; its files in OUT/slurm."""
    try:
        slurm = submitit.SlurmExecutor(folder=Path(args.out).resolve() / "slurm", max_num_timeout=MAX_REQUEUES)
    except RuntimeError as error:
        raise RecipeError(f"--launcher slurm: {error} (no SLURM client here: run compare.sh on the cluster's "
                          "login node)") from None
    gpus = args.gpus_per_node
    parameters = {"job_name": f"normmatters-{args.benchmark}", "time": args.time_minutes, "nodes": args.nodes,
                  "ntasks_per_node": 1, "cpus_per_task": args.cpus_per_run or max(1, CPUS_PER_GPU * gpus),
                  "array_parallelism": args.max_jobs, "additional_parameters": sbatch_options(args.sbatch)}
    parameters.update({key: value for key, value in (("partition", args.partition), ("mem", args.mem),
                                                     ("gpus_per_node", gpus or None)) if value is not None})
    slurm.update_parameters(**parameters)
    return slurm


def sbatch_options(options: List[str]) -> dict:
    """{"account": "nlp", "exclusive": True} from ["account=nlp", "exclusive"]."""
    parsed = {}
    for option in options:
        key, given, value = option.lstrip("-").partition("=")
        parsed[key] = value if given else True
    return parsed


def submit(runs: List[Run], args, total: int) -> None:
    """One job array of `runs`; each run's job id and logs in its slurm.json, and a line each."""
    slurm = executor(args)
    try:
        with slurm.batch():
            jobs = [slurm.submit(TrainAndEvaluate(run, args)) for run in runs]
    except Exception as error:  # submitit raises sbatch's failure as it comes
        raise RecipeError(f"sbatch refused the jobs: {error}") from None
    for run, job in zip(runs, jobs):
        run.save_dir.mkdir(parents=True, exist_ok=True)
        record = {"job_id": job.job_id, "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                  "submitted": time.time()}
        write_text_atomically(record_path(run), json.dumps(record, indent=1))
        print(f"[compare] {run.number}/{total} {run.save_dir.name}: submitted as job {job.job_id}, "
              f"log {run.log} (SLURM's: {job.paths.stdout})", flush=True)


def compare_on_slurm(runs: List[Run], args) -> None:
    """compare.sh's main with --launcher slurm (see the module's text)."""
    active = active_jobs()
    states = {run.number: run_state(run, active) for run in runs}
    busy = {run.save_dir.name: states[run.number][1]["job_id"] for run in runs
            if states[run.number][0] in ("queued", "running")}
    check_commands(runs, args, args.gpus_per_node, busy)
    states = {run.number: run_state(run, active) for run in runs}  # --retrain may have deleted some
    progress = Progress(len(runs), args.max_jobs)
    for run in runs:
        state, record = states[run.number]
        if state != "new":
            progress.say(run, state_line(run, state, record))
    to_submit = [run for run in runs if states[run.number][0] in ("new", "failed")]
    if to_submit:
        batch = effective_batch(to_submit[0].command(args, args.gpus_per_node), args.gpus_per_node)
        print(f"[compare] submitting {len(to_submit)} job(s), each {args.nodes} node(s), batch {batch_text(batch)}",
              flush=True)
        submit(to_submit, args, len(runs))
    if args.wait:
        follow(runs, args, progress)
    unfinished = [run for run in runs if not (run.save_dir / "results.json").is_file()]
    if not unfinished:
        write_results(runs, Path(args.out), progress)
    elif args.wait:
        failed = "\n".join(f"  {run.save_dir.name}: job {job_record(run)['job_id']}, log {run.log}"
                           for run in unfinished)
        raise RecipeError(f"{len(unfinished)} of {len(runs)} runs failed (their logs' last lines above); the "
                          f"others are done:\n{failed}\nrerun the same compare.sh command to submit them again "
                          "(they resume where they were)")
    else:
        print(f"[compare] {len(unfinished)} of {len(runs)} runs are not done: rerun this command to see their "
              "states (and resubmit any that failed), or add --wait to follow them; the table is written once "
              "every run is done", flush=True)


def follow(runs: List[Run], args, progress: Progress) -> None:
    """Until no run's job is queued or running: a line for each run whose state changed."""
    active = active_jobs()
    seen = {run.number: run_state(run, active)[0] for run in runs}
    started = {}
    progress.waiting = sum(state in ("queued", "running") for state in seen.values())
    while any(state in ("queued", "running") for state in seen.values()):
        time.sleep(args.poll)
        active = active_jobs()
        for run in runs:
            state, record = run_state(run, active)
            if state == seen[run.number]:
                continue
            seen[run.number] = state
            if state == "running":
                started[run.number] = time.monotonic()
                progress.say(run, f"running (job {record['job_id']}, log {run.log})")
            elif state == "done":
                took = time.monotonic() - started.get(run.number, progress.started)
                progress.finished(took)
                since = f", {minutes(took)} after it started" if run.number in started else ""
                progress.say(run, state_line(run, state, record) + since)
            else:
                progress.waiting -= state == "failed"
                progress.say(run, state_line(run, state, record))
