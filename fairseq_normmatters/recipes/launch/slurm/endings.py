"""Why a run's SLURM job ended, and whether compare.sh submits the run again.

The ending is read, in this order, from sacct (where accounting is on), from `scontrol show
job` (while the controller still knows the job: MinJobAge, 300 s by default), and from what the
job left behind: slurmstepd's lines in the job's error stream ("CANCELLED AT ... DUE TO TIME
LIMIT", "DUE TO PREEMPTION", "DUE TO NODE FAILURE", an oom-kill) and submitit's own ("Job
completed successfully", "Submitted job triggered an exception"). A run's slurm.json keeps each
ending it was given, so that it is still known once SLURM has forgotten the job.

A run whose job timed out, was preempted, lost its node or could never start is submitted
again (it resumes from its checkpoint_last.pt); one cancelled by its user is not, unless
`--resubmit cancelled`; one that failed is, once: a run that failed the same way twice says so
and is not submitted again unless `--resubmit failed`.
"""

import re
import subprocess
from pathlib import Path
from typing import Optional

from ...run.runs import Run, log_tail

#: an ending's state -> its words in a run's line
WORDS = {"COMPLETED": "completed without results", "FAILED": "failed", "CANCELLED": "cancelled",
         "TIMEOUT": "timed out", "PREEMPTED": "preempted", "OUT_OF_MEMORY": "out of memory",
         "NODE_FAIL": "lost its node", "BOOT_FAIL": "its node did not boot", "DEADLINE": "passed its deadline",
         "NEVER_STARTS": "could never start", "UNKNOWN": "ended, how SLURM no longer says"}
RESUMED = {"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "NEVER_STARTS"}  # submitted again
FAILURES = {"COMPLETED", "FAILED", "OUT_OF_MEMORY", "UNKNOWN"}  # submitted again once
RESUBMIT_CHOICES = ("cancelled", "failed")
#: slurmstepd's and submitit's lines in a job's error stream -> the ending they tell (first match)
LOG_MARKS = ((re.compile(r"CANCELLED AT \S+ DUE TO TIME LIMIT"), "TIMEOUT"),
             (re.compile(r"DUE TO PREEMPTION"), "PREEMPTED"),
             (re.compile(r"DUE TO NODE FAIL"), "NODE_FAIL"),
             (re.compile(r"oom[-_]kill|Out Of Memory", re.I), "OUT_OF_MEMORY"),
             (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT"), "CANCELLED"),
             (re.compile(r"Submitted job triggered an exception"), "FAILED"),
             (re.compile(r"Job completed successfully"), "COMPLETED"))
#: squeue's reasons of a pending job that no wait will change: its request is beyond a limit
NEVER_STARTS = {"PartitionTimeLimit", "PartitionNodeLimit", "AccountNotAllowed",
                "QOSNotAllowed", "InvalidAccount", "InvalidQOS", "BadConstraints", "QOSMaxWallDurationPerJobLimit",
                "AssocMaxWallDurationPerJobLimit", "QOSMaxNodePerJobLimit", "AssocMaxNodesPerJobLimit",
                "QOSMaxCpuPerJobLimit", "AssocMaxCpuPerJobLimit", "QOSMaxGRESPerJob", "AssocMaxGRESPerJob"}


def state_word(text: str) -> Optional[str]:
    """'CANCELLED' from sacct's 'CANCELLED by 1000'; None for nothing."""
    words = text.split()
    return words[0].rstrip("+") if words else None


def sacct_state(job_id: str) -> Optional[str]:
    result = subprocess.run(["sacct", "--jobs", job_id, "--allocations", "--noheader", "--parsable2",
                             "--format=State"], capture_output=True, text=True)
    lines = result.stdout.splitlines() if result.returncode == 0 else []
    return state_word(lines[-1]) if lines else None


def scontrol_state(job_id: str) -> Optional[str]:
    result = subprocess.run(["scontrol", "show", "job", job_id, "--oneliner"], capture_output=True, text=True)
    found = re.search(r"\bJobState=(\w+)", result.stdout) if result.returncode == 0 else None
    return found[1] if found else None


def log_state(record: dict) -> Optional[str]:
    path = Path(record["stderr"])
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return next((state for mark, state in LOG_MARKS if mark.search(text)), None)


def job_ending(run: Run, record: dict) -> dict:
    """{"state", "detail"} of the run's ended job: the state SLURM gave it and, for a failure,
    the last line of the run's log (what failed)."""
    state = record.get("ending", {}).get("state")
    for source in (lambda: sacct_state(record["job_id"]), lambda: scontrol_state(record["job_id"]),
                   lambda: log_state(record)):
        state = state or source()
    state = state if state in WORDS else "UNKNOWN"
    detail = last_line(run.log if run.log.is_file() else Path(record["stderr"])) if state in FAILURES else ""
    return {"state": state, "detail": detail}


def last_line(log: Path) -> str:
    lines = [line for line in log_tail(log, 5).splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def resubmission(record: dict, ending: dict, resubmit) -> Optional[str]:
    """None if the run is submitted again, else why not (in words for its line)."""
    state = ending["state"]
    if state == "CANCELLED" and "cancelled" not in resubmit:
        return "not submitted again (--resubmit cancelled submits it; it resumes where it stopped)"
    if state in FAILURES and "failed" not in resubmit:
        earlier = [job for job in record.get("history", []) if job.get("ending") == ending]
        if earlier:
            return (f"the same way as job {earlier[-1]['job_id']} before: not submitted again; fix the cause, then "
                    "--resubmit failed")
    return None


def ending_words(record: dict, ending: dict) -> str:
    words = f"{WORDS[ending['state']]} (job {record['job_id']})"
    return f"{words}: {ending['detail']}" if ending["detail"] else words
