"""compare.sh's options for --launcher slurm and the sbatch script they make.

The script is the one submitit's SlurmExecutor submits for these parameters (one job array a
call), written here for --dry-run without a cluster or submitit (tests/test_cluster_options.py
holds it against submitit's own, tests/test_slurm_production.py against the submitted one), with
what a production cluster needs of it: no
wckey unless one is given (sites that enforce wckeys refuse submitit's default), the GPU request
in the form the site takes (--gpus-per-node [TYPE:]G or --gres gpu[:TYPE]:G, never both), the
job's own set-up lines before its Python (--setup), the Python of the nodes (--python), account,
QOS, constraint and exclusivity as named options, and srun given the job's --cpus-per-task
(srun does not inherit it from sbatch on SLURM 22.05-23.02). --dry-run prints that script.
"""

import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .endings import RESUBMIT_CHOICES
from ...run.configs import BENCHMARKS

CPUS_PER_GPU = 4  # a job's CPUs when --cpus-per-run is not given
GPU_COUNT = re.compile(r"^(?:(?P<type>[A-Za-z0-9_.-]+):)?(?P<count>\d+)$")  # --gpus-per-node [TYPE:]G
GPU_GRES = re.compile(r"^gpu(?::(?P<type>[A-Za-z0-9_.-]+))?:(?P<count>\d+)$")  # --gres gpu[:TYPE]:G
NAMED = ("partition", "mem", "account", "qos", "constraint")  # sbatch options compare.sh names itself
#: sbatch's keys that compare.sh writes itself, with the option that sets each (short forms too)
OWN_KEYS = {**{key: f"--{key}" for key in NAMED}, "exclusive": "--exclusive", "time": "--time", "t": "--time",
            "nodes": "--nodes", "N": "--nodes", "cpus-per-task": "--cpus-per-run", "c": "--cpus-per-run",
            "p": "--partition", "A": "--account", "q": "--qos", "C": "--constraint",
            **{key: "--gpus-per-node or --gres" for key in ("gpus-per-node", "gres", "gpus", "G", "gpus-per-task")},
            **{key: "nothing: compare.sh sets it" for key in ("job-name", "J", "array", "a", "output", "o", "error",
                                                               "e", "signal", "ntasks-per-node", "open-mode")}}


def add_slurm_options(parser) -> None:
    slurm = parser.add_argument_group("--launcher slurm (recipes/launch/slurm/launcher.py)")
    slurm.add_argument("--partition", help="the partition the jobs go to (default: the cluster's)")
    slurm.add_argument("--gpus-per-node", metavar="[TYPE:]G",
                       help="GPUs of each node of a run, sbatch's --gpus-per-node, a type kept as given (e.g. "
                            "h100:8; default: the benchmark's reference, 8 for WMT14 and 1 for IWSLT14; 0 with "
                            "--cpu after --)")
    slurm.add_argument("--gres", metavar="gpu[:TYPE]:G",
                       help="the GPUs as a generic resource instead (e.g. gpu:a100:8), for clusters that "
                            "take only --gres")
    slurm.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes of a run (default 1)")
    slurm.add_argument("--cpus-per-run", type=int, metavar="C",
                       help="CPUs of each node of a run (default: 4 a GPU; 1 for a CPU run); srun gets them too")
    slurm.add_argument("--mem", help="memory of each node of a run, as sbatch --mem takes it (e.g. 64G)")
    slurm.add_argument("--account", help="the account the jobs are charged to")
    slurm.add_argument("--qos", help="the jobs' quality of service")
    slurm.add_argument("--constraint", help="the nodes' features the jobs need (e.g. 'h100&ib')")
    slurm.add_argument("--exclusive", action="store_true", help="nodes not shared with other jobs")
    slurm.add_argument("--time", default="24:00:00",
                       help="a job's time limit, [D-]HH:MM:SS or minutes (default 24:00:00); a run that "
                            "needs longer saves its state at the limit's warning, is requeued and resumes")
    slurm.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="a shell line the job runs before its Python (e.g. 'module load cuda/12.4', "
                            "'source ~/venv/bin/activate', 'export NCCL_IB_DISABLE=1'); repeatable, in order")
    slurm.add_argument("--python", metavar="PATH",
                       help="the Python the nodes run (a venv's, a container's; default: the one running compare.sh)")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="KEY[=VALUE]",
                       help="another sbatch option, without its dashes (e.g. --sbatch wckey=nlp "
                            "--sbatch export=NONE); repeatable")
    slurm.add_argument("--max-jobs", type=int, default=64, metavar="J",
                       help="at most J jobs of one submission at once (default 64)")
    slurm.add_argument("--resubmit", action="append", default=[], choices=RESUBMIT_CHOICES,
                       help="submit again the runs whose job was cancelled, or failed twice the same way "
                            "(without it they are said, not submitted); repeatable")
    slurm.add_argument("--dry-run", action="store_true",
                       help="print the sbatch script the runs would be submitted with, and submit nothing")
    slurm.add_argument("--wait", action="store_true",
                       help="wait for the jobs, one line per run as it starts and ends, then write the table")
    slurm.add_argument("--poll", type=float, default=30, metavar="S",
                       help="with --wait, ask SLURM for the jobs' states every S seconds (default 30)")


SLURM_ONLY = ("partition", "gpus_per_node", "gres", "cpus_per_run", "mem", "account", "qos", "constraint", "python")
SLURM_ONLY_DEFAULTS = {"nodes": 1, "sbatch": [], "setup": [], "resubmit": [], "exclusive": False, "dry_run": False, "wait": False}


def check_slurm_options(parser, args) -> None:
    """parser.error for an option of --launcher slurm that SLURM would refuse or misread; sets
    args.gpus_per_node (the count), args.gpu_request ({sbatch key: value} or {}) and
    args.time_minutes."""
    if args.launcher != "slurm":
        given = [f"--{name.replace('_', '-')}" for name in SLURM_ONLY if getattr(args, name) is not None]
        given += [f"--{name.replace('_', '-')}" for name, default in SLURM_ONLY_DEFAULTS.items()
                  if getattr(args, name) != default]
        if given:
            parser.error(f"{', '.join(given)}: only with --launcher slurm")
        return
    args.gpus_per_node, args.gpu_request = gpu_request(parser, args)
    for name, least in (("nodes", 1), ("cpus_per_run", 1), ("max_jobs", 1)):
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
    for option in args.sbatch:
        key = sbatch_key(option)
        if key in OWN_KEYS:
            parser.error(f"--sbatch {option}: compare.sh writes {key} itself; give {OWN_KEYS[key]}")


def gpu_request(parser, args):
    """(GPUs a node, {sbatch key: value}) from --gpus-per-node or --gres (not both), else the
    benchmark's reference (none with --cpu)."""
    if args.gpus_per_node is not None and args.gres is not None:
        parser.error(f"--gpus-per-node {args.gpus_per_node} and --gres {args.gres}: two GPU requests; give one")
    if args.gres is not None:
        found = GPU_GRES.match(args.gres)
        if not found:
            parser.error(f"--gres {args.gres!r}: give gpu:G or gpu:TYPE:G (e.g. gpu:a100:8)")
        return int(found["count"]), {"gres": args.gres}
    if args.gpus_per_node is None:
        count = 0 if "--cpu" in args.extra else BENCHMARKS[args.benchmark].reference_gpus
        return count, {"gpus_per_node": count} if count else {}
    found = GPU_COUNT.match(args.gpus_per_node)
    if not found:
        parser.error(f"--gpus-per-node {args.gpus_per_node!r}: give G or TYPE:G (e.g. 8 or h100:8)")
    count = int(found["count"])
    return count, {"gpus_per_node": args.gpus_per_node} if count else {}


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


def sbatch_key(option: str) -> str:
    return option.lstrip("-").partition("=")[0]


def sbatch_options(options: List[str]) -> dict:
    """{"wckey": "nlp", "requeue": True} from ["wckey=nlp", "--requeue"]."""
    parsed = {}
    for option in options:
        key, given, value = option.lstrip("-").partition("=")
        parsed[key] = value if given else True
    return parsed


def job_folder(args) -> Path:
    """Where submitit keeps the jobs' pickles, scripts and SLURM's logs: OUT/slurm."""
    return Path(args.out).resolve() / "slurm"


def python_command(args) -> str:
    return shlex.quote(args.python or sys.executable)


def job_parameters(args, job_name: str) -> Dict[str, object]:
    """submitit's parameters of the jobs (SlurmExecutor.update_parameters)."""
    cpus = args.cpus_per_run or max(1, CPUS_PER_GPU * args.gpus_per_node)
    parameters = {"job_name": job_name, "time": args.time_minutes, "nodes": args.nodes, "ntasks_per_node": 1,
                  "cpus_per_task": cpus, "srun_args": ["--cpus-per-task", str(cpus)], "wckey": None,
                  "array_parallelism": args.max_jobs, "additional_parameters": sbatch_options(args.sbatch),
                  **args.gpu_request}
    parameters.update({name: getattr(args, name) for name in NAMED if getattr(args, name) is not None})
    if args.exclusive:
        parameters["exclusive"] = True
    if args.setup:
        parameters["setup"] = list(args.setup)
    return parameters


def sbatch_script(args, job_name: str, count: int, parameters: Optional[dict] = None) -> str:
    """The script submitted for `count` runs (an array when more than one): what --dry-run prints.
    Its #SBATCH lines are the parameters sbatch takes (sorted by name as given, "_" read as "-"),
    SLURM's logs in OUT/slurm (%j, or %A_%a for an array), the time limit's warning SIGUSR2 90 s
    before it, then the set-up lines and srun of submitit's job runner."""
    parameters = dict(parameters or job_parameters(args, job_name))
    folder = job_folder(args)
    job = "%A_%a" if count > 1 else "%j"
    logs = {kind: str(folder / f"{job}_%t_log.{kind}") for kind in ("out", "err")}
    flags = {key: value for key, value in parameters.items() if value is not None and key not in NOT_SBATCH}
    flags["signal"] = f"USR2@{WARNING_SECONDS}"
    if count > 1:
        flags["array"] = f"0-{count - 1}%{min(count, parameters['array_parallelism'])}"
    flags.update({"output": logs["out"].replace("%t", "0"), "error": logs["err"].replace("%t", "0"),
                  "open-mode": "append", **(parameters.get("additional_parameters") or {})})
    srun = shlex.join(["srun", "--unbuffered", "--output", logs["out"], "--error", logs["err"],
                       *parameters.get("srun_args", [])])
    runner = f"{python_command(args)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    setup = ["", "# setup", *parameters["setup"]] if parameters.get("setup") else []
    return "\n".join(["#!/bin/bash", "", "# Parameters", *(sbatch_line(key, flags[key]) for key in sorted(flags)),
                      *setup, "", "# command", "export SUBMITIT_EXECUTOR=slurm", f"{srun} {runner}", ""])


#: job parameters that are not sbatch's (submitit's executor reads them itself)
NOT_SBATCH = ("array_parallelism", "additional_parameters", "setup", "srun_args")
WARNING_SECONDS = 90  # SIGUSR2 this long before the time limit: the run saves and is requeued


def sbatch_line(key: str, value) -> str:
    """'#SBATCH --cpus-per-task=32' ('#SBATCH --exclusive' for a flag), the value shell-quoted."""
    key = key.replace("_", "-")
    return f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}"
