"""compare.sh --launcher slurm: each run of the comparison one SLURM job, submitted with submitit.

A job trains and evaluates its run as a local comparison does (job.py, the output in
RUN/compare.log). The jobs of one call are one job array, at most --max-jobs running at once,
made with the options of options.py. A job warned of its time limit (SLURM signals it 90 s
before) or preempted saves its run's state at the end of the update it is in and is requeued,
resuming from exactly there; a job that fails (a bad flag, a NaN) is left failed, and said so
with the end of its log. RUN/slurm.json keeps the run's job id and submitit's logs (OUT/slurm/).

Every call prints each run's state from squeue and the runs' folders (queued with squeue's
reason, running, done, or how its job ended: endings.py), submits the runs that are new or
whose ending calls for it, and returns; with --wait it follows them, a line per run as it
starts and ends. A queued job that can never start (its --time above the partition's limit, say)
is named and cancelled at once. The call holds OUT's lock (runs.holding_out) while it reads the
states and submits: two calls at once submit each run once. The table and the plot are written once
every run is done. A run over several nodes (--nodes) starts one task a node and fairseq's own
SLURM set-up spawns a process a GPU, with a port of the job's own; only the first task evaluates.
"""

import dataclasses
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

from ...common import RecipeError
from ...run.evaluate import outcome
from ...run.preflight import preflight_here
from ...run.batch import batch_text, effective_batch
from ...run.runs import Run, check_commands, holding_out, log_tail
from ..progress import Progress, minutes, write_results
from .endings import FAILURES, NEVER_STARTS, ending_words, job_ending, resubmission
from .job import TrainAndEvaluate
from .options import job_folder, job_parameters, python_command, sbatch_script

# squeue's states of a job that has not ended, as a run's state
ACTIVE = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
          "CONFIGURING": "queued", "RESV_DEL_HOLD": "queued", "RUNNING": "running", "COMPLETING": "running",
          "SUSPENDED": "running", "STOPPED": "running", "SIGNALING": "running", "STAGE_OUT": "running",
          "RESIZING": "running"}


STOP_WORDS = {"SIGTERM": "SIGTERM (preempted or requeued)", "SIGUSR2": "its time limit's warning (SIGUSR2)"}
SQUEUE_RETRIES = 10  # squeue failures in a row that --wait rides out (a controller restarting), a poll apart


def active_jobs() -> Dict[str, Tuple[str, str]]:
    """{job id: (squeue state, reason)} of this user's jobs that have not ended (array tasks
    one by one)."""
    result = subprocess.run(["squeue", "--noheader", "--array", "--me", "--format=%i|%T|%r"], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RecipeError(f"squeue failed ({result.stderr.strip() or result.returncode}): is this a SLURM "
                          "cluster's login node (SLURM_CONF, the controller up)?")
    return parse_squeue(result.stdout)


def parse_squeue(text: str) -> Dict[str, Tuple[str, str]]:
    jobs = {}
    for line in text.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if state:
            jobs[job] = (state, reason)
    return jobs


def run_state(run: Run, active: Dict[str, Tuple[str, str]], args=None):
    """(state, job record): "done" (its results.json), "queued" or "running" (its job in
    `active`), "ended" (its job ended without results) or "new" (no job yet, or one whose
    submission never reached SLURM)."""
    record = run.folder.slurm_record()
    if run.folder.is_evaluated():
        return "done", record
    if record is not None and "job_id" not in record:
        record = find_by_name(run, record, args) if args is not None else None
    if record is None:
        return "new", None
    return ACTIVE.get(active.get(record["job_id"], ("", ""))[0], "ended"), record


def ended(run: Run, record: dict) -> dict:
    """The ending of the run's ended job (endings.job_ending), kept in its record."""
    if "ending" not in record:
        record["ending"] = job_ending(run, record)
        run.folder.write_slurm_record(record)
    return record["ending"]


def state_line(run: Run, state: str, record, active, resubmit=()) -> str:
    if state == "done":
        return f"done, {outcome(run.folder.results())}"
    if state == "ended":
        ending = ended(run, record)
        held = resubmission(record, ending, resubmit)
        line = f"{ending_words(record, ending)}; {held or 'to be submitted again (it resumes where it stopped)'}"
        if ending["state"] in FAILURES:
            log = run.log if run.log.is_file() else Path(record["stderr"])
            line += f"; the last lines of {log}:\n{log_tail(log)}\n(SLURM's log of the job: {record['stderr']})"
        return line
    reason = active.get(record["job_id"], ("", ""))[1]
    waits = f", waiting: {reason}" if state == "queued" and reason not in ("", "None") else ""
    return f"{state} (job {record['job_id']}{requeued_after(run, record)}{waits}, log {run.log})"


def requeued_after(run: Run, record: dict) -> str:
    """', requeued after SIGTERM (preempted or requeued), its state saved': the stops of the run's
    present job (its slurm-events.jsonl), '' for none."""
    stops = [STOP_WORDS.get(event.get("signal"), event.get("signal")) for event in run.folder.slurm_events()
             if event.get("job_id") == record["job_id"]]
    return f", requeued after {' and '.join(stops)}, its state saved" if stops else ""


def to_submit(runs: List[Run], states, resubmit) -> List[Run]:
    """The runs that are new, or whose job ended in a way that calls for another."""
    return [run for run in runs if states[run.number][0] == "new" or (
        states[run.number][0] == "ended" and resubmission(states[run.number][1], ended(run, states[run.number][1]),
                                                          resubmit) is None)]


def submitit_module():
    """submitit, imported by this launcher alone (a local comparison and --dry-run never need it),
    or RecipeError naming the package's extra that installs it."""
    try:
        import submitit
        import submitit.core.utils
    except ImportError as error:
        raise RecipeError(f"--launcher slurm needs submitit, which is not installed here ({error}): pip install "
                          "'fairseq_normmatters[slurm]' (nothing was submitted)") from None
    return submitit


def executor(args, job_name: str):
    """A submitit SlurmExecutor with compare.sh's options (options.job_parameters); its
    files in OUT/slurm."""
    try:
        slurm = submitit_module().SlurmExecutor(folder=job_folder(args), python=python_command(args))
    except RuntimeError as error:
        raise RecipeError(f"--launcher slurm: {error} (no SLURM client here: run compare.sh on the cluster's "
                          "login node, or add --dry-run to see the script without one)") from None
    slurm.update_parameters(**job_parameters(args, job_name))
    return slurm


def submit(runs: List[Run], args, total: int) -> None:
    """One job array of `runs`, named for this submission: each run's slurm.json says it is
    being submitted (its name and task) before sbatch, and then its job id and logs (the
    earlier jobs' records in its history); a line each."""
    name = f"{job_name(args)}-{uuid.uuid4().hex[:8]}"
    for index, run in enumerate(runs):
        run.save_dir.mkdir(parents=True, exist_ok=True)
        earlier = run.folder.slurm_record() or {}
        history = [*earlier.pop("history", []), *([earlier] if "job_id" in earlier else [])]
        run.folder.write_slurm_record({"submitting": name, "task": index if len(runs) > 1 else None,
                                       "history": history})
    slurm = executor(args, name)
    try:
        with slurm.batch():
            jobs = [slurm.submit(TrainAndEvaluate(run, args)) for run in runs]
    except Exception as error:  # submitit raises sbatch's failure as it comes
        raise RecipeError(f"sbatch refused the jobs: {error}") from None
    for run, job in zip(runs, jobs):
        record = run.folder.slurm_record()
        run.folder.write_slurm_record(job_found(run, record, job.job_id, args))
        print(f"[compare] {run.number}/{total} {run.save_dir.name}: submitted as job {job.job_id}, "
              f"log {run.log} (SLURM's: {job.paths.stdout})", flush=True)


def job_found(run: Run, record: dict, job_id: str, args) -> dict:
    """The run's record once its job id is known: the id and SLURM's logs of the job."""
    paths = submitit_module().core.utils.JobPaths(job_folder(args), job_id=job_id, task_id=0)
    return {"job_id": job_id, "stdout": str(paths.stdout), "stderr": str(paths.stderr), "submitted": time.time(),
            "name": record["submitting"], "task": record["task"], "history": record.get("history", [])}


def find_by_name(run: Run, record: dict, args):
    """The record of a run whose submission stopped between sbatch and the write of its job id:
    its job found in squeue by the submission's name and the run's task, else None (its job
    never reached SLURM, or ended and is forgotten: the run is new again)."""
    result = subprocess.run(["squeue", "--noheader", "--array", "--me", "--name", record["submitting"],
                             "--format=%i"], capture_output=True, text=True)
    wanted = [job for job in result.stdout.split() if record["task"] is None or job.endswith(f"_{record['task']}")]
    if result.returncode != 0 or not wanted:
        return None
    found = job_found(run, record, wanted[0], args)
    run.folder.write_slurm_record(found)
    print(f"[compare] {run.save_dir.name}: found its job {wanted[0]} by the name {record['submitting']} (the call "
          "that submitted it stopped before recording it)", flush=True)
    return found


def print_dry_run(runs: List[Run], args) -> None:
    """--dry-run: the sbatch script the runs without results would be submitted with; nothing
    submitted, no SLURM asked (runs queued or running now would not be submitted again). The
    job name ends in TOKEN where a submission puts its own 8 hex digits."""
    waiting = [run for run in runs if not run.folder.is_evaluated()]
    if not waiting:
        print("[compare] --dry-run: every run has its results; nothing would be submitted", flush=True)
        return
    tasks = ", ".join(f"{index}: {run.save_dir.name}" for index, run in enumerate(waiting))
    shape = f"one job array (tasks {tasks})" if len(waiting) > 1 else f"one job ({waiting[0].save_dir.name})"
    print(f"[compare] --dry-run: {len(waiting)} run(s) without results would be submitted as {shape}, except those "
          f"queued or running now, with this script (nothing was submitted):\n"
          f"{sbatch_script(args, job_name(args) + '-TOKEN', len(waiting))}", flush=True)


def job_name(args) -> str:
    return f"normmatters-{args.benchmark}"


def compare_on_slurm(runs: List[Run], args) -> None:
    """compare.sh's main with --launcher slurm (see the module's text)."""
    if args.dry_run:
        return print_dry_run(runs, args)
    submitit_module()
    progress = Progress(len(runs), args.max_jobs)
    with holding_out(Path(args.out), wait=True):
        submit_what_is_due(runs, args, progress)
    if args.wait:
        follow(runs, args, progress)
    unfinished = [run for run in runs if not run.folder.is_evaluated()]
    if not unfinished:
        write_results(runs, Path(args.out), progress)
    elif args.wait:
        failed = "\n".join(f"  {run.save_dir.name}: job {run.folder.slurm_record()['job_id']}, log {run.log}"
                           for run in unfinished)
        raise RecipeError(f"{len(unfinished)} of {len(runs)} runs ended without results (said above); the others "
                          f"are done:\n{failed}\nrerun the same compare.sh command to submit those due again "
                          "(they resume where they were)")
    else:
        print(f"[compare] {len(unfinished)} of {len(runs)} runs are not done: rerun this command to see their "
              "states (and submit again those whose ending calls for it), or add --wait to follow them; the table "
              "is written once every run is done", flush=True)


def preflight_on_slurm(args):
    """compare.sh --preflight --launcher slurm: the preflight as one job of the cluster (one node,
    compare.sh's GPU request), followed until it ends; returns its table and flagged configurations."""
    if args.dry_run:
        raise RecipeError("--preflight --dry-run: the preflight is one job; leave --dry-run out to submit it")
    slurm = executor(args, f"{job_name(args)}-preflight")
    slurm.update_parameters(nodes=1, array_parallelism=1)
    try:
        job = slurm.submit(preflight_here, dataclasses.replace(args, launcher="local"))
    except Exception as error:  # submitit raises sbatch's failure as it comes
        raise RecipeError(f"sbatch refused the preflight job: {error}") from None
    print(f"[preflight] submitted as job {job.job_id} (SLURM's log: {job.paths.stdout}); waiting for it", flush=True)
    while job.job_id in squeue_retried(args):
        time.sleep(args.poll)
    if not job.paths.result_pickle.exists():  # killed, or failed outside Python: no result was written
        raise RecipeError(f"the preflight job {job.job_id} ended without its table; the end of its log "
                          f"{job.paths.stderr}:\n{log_tail(job.paths.stderr)}")
    try:
        return job.result()
    except Exception as error:
        raise RecipeError(f"the preflight job {job.job_id} failed: {str(error)[-2000:]}") from None


def submit_what_is_due(runs: List[Run], args, progress: Progress) -> None:
    """Each run's state said; the queued jobs that can never start cancelled; the runs due
    submitted as one array."""
    active = active_jobs()
    states = {run.number: run_state(run, active, args) for run in runs}
    busy = {run.save_dir.name: states[run.number][1]["job_id"] for run in runs
            if states[run.number][0] in ("queued", "running")}
    check_commands(runs, args, args.gpus_per_node, busy)
    states = {run.number: run_state(run, active) for run in runs}  # --retrain may have moved some aside
    for run in runs:
        state, record = states[run.number]
        if state != "new":
            progress.say(run, state_line(run, state, record, active, args.resubmit))
    never = cancel_never_starting(runs, states, active)
    due = to_submit(runs, states, args.resubmit)
    if due:
        batch = effective_batch(due[0].command(args, args.gpus_per_node), args.gpus_per_node)
        print(f"[compare] submitting {len(due)} job(s), each {args.nodes} node(s), batch {batch_text(batch)}",
              flush=True)
        submit(due, args, len(runs))
    if never:
        raise RecipeError("\n".join(never))


def cancel_never_starting(runs: List[Run], states, active) -> List[str]:
    """Cancel the queued jobs whose squeue reason says they can never start (NEVER_STARTS), each
    recorded as such; returns a line for each."""
    lines = []
    for run in runs:
        state, record = states[run.number]
        reason = active.get(record["job_id"], ("", ""))[1] if record else ""
        if state == "queued" and reason in NEVER_STARTS:
            subprocess.run(["scancel", record["job_id"]], capture_output=True)
            record["ending"] = {"state": "NEVER_STARTS", "detail": reason}
            run.folder.write_slurm_record(record)
            lines.append(f"{run.save_dir.name}: job {record['job_id']} can never start ({reason}: its request is "
                         "beyond a limit of the partition, account or QOS); cancelled it: change the option "
                         "(--time, --partition, --account, --qos, --gpus-per-node, ...) and rerun")
    return lines


def follow(runs: List[Run], args, progress: Progress) -> None:
    """Until no run's job is queued or running: a line for each run whose state (or queued
    job's reason) changed; squeue's failures retried, a job that can never start raised."""
    active = squeue_retried(args)
    seen = {run.number: run_state(run, active)[0] for run in runs}
    said = {}
    started = {}
    progress.waiting = sum(state in ("queued", "running") for state in seen.values())
    while any(state in ("queued", "running") for state in seen.values()):
        time.sleep(args.poll)
        active = squeue_retried(args)
        states = {run.number: run_state(run, active) for run in runs}
        never = cancel_never_starting(runs, states, active)
        if never:
            raise RecipeError("\n".join(never))
        for run in runs:
            state, record = states[run.number]
            line = state_line(run, state, record, active, args.resubmit) if record else state
            if said.get(run.number) == line:
                continue
            said[run.number], previous, seen[run.number] = line, seen[run.number], state
            if state == "running" and previous != "running":
                started[run.number] = time.monotonic()
            if state == "done":
                took = time.monotonic() - started.get(run.number, progress.started)
                progress.finished(took)
                line += f", {minutes(took)} after it started" if run.number in started else ""
            elif state == "ended":
                progress.waiting -= 1
            progress.say(run, line)


def squeue_retried(args) -> Dict[str, Tuple[str, str]]:
    """active_jobs, asked again a poll later after a failure, SQUEUE_RETRIES times in a row."""
    for attempt in range(SQUEUE_RETRIES):
        try:
            return active_jobs()
        except RecipeError as error:
            print(f"[compare] {error}; asking again in {args.poll:g} s ({attempt + 1} of {SQUEUE_RETRIES})",
                  flush=True)
            time.sleep(args.poll)
    return active_jobs()
