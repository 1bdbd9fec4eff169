"""The paper's comparison in one command: every configuration x seed trained, evaluated, collected.

    scripts/compare.sh {wmt14,iwslt14} PREPARED OUT [--seeds N] [--configs C ...] [--parallel P]
                       [-- fairseq-train args]

For each configuration (default: the benchmark's Transformer l2, l1, bwn, none and the LSTM
nonorm, bwn) and each seed 1..N (default 3) it trains OUT/CONFIG-seedS as train_{benchmark}.sh
does with --seed S, in the configuration's precision (fp16 with a layer norm, amp without;
--precision [CONFIG=]P), evaluates it as evaluate.sh does (WMT14: beam 4, lenpen 0.6, the last 5
checkpoints averaged; IWSLT14: beam 5, lenpen 1, as fairseq's example) and finally writes
OUT/results.md and OUT/curves.png with collect_results.py: the seeds' means and spreads, each
configuration's difference from its baseline with sacreBLEU's paired bootstrap test, and the
paper's differences, and says at the end at how many updates the runs compare and which were
still learning (the rule is below). A run whose results.json exists is skipped; one that
stopped half-way resumes from its checkpoint_last.pt (fairseq-train's own resume); rerun the
same command after any interruption. Arguments after -- go to every fairseq-train (e.g. a
shorter schedule). A run begun as another experiment than this command would train
(recipes/identity.py: other training flags, other data by content, another batch in tokens;
not another place, GPU count or split of the same batch) is neither counted nor resumed:
compare.sh names the difference and stops before training anything; use another OUT, or
--retrain to move those runs aside (kept, as RUN.replaced-DATE) and train them anew. A run
resumed on another GPU layout or under other software versions is said on the screen and in
the table. --direction (de-en or en-de) must be the one PREPARED was made for
(prepare_*.sh --direction).

--parallel P runs P runs side by side, each with its share of the machine: 1/P of the CPU
cores (OMP_NUM_THREADS) or of the visible GPUs (CUDA_VISIBLE_DEVICES). The screen gets one line
per run when it starts and when it ends (with the time so far and an estimate of the rest);
each run's whole output goes to OUT/CONFIG-seedS/compare.log, whose last lines are shown if a
step fails. Once a run is evaluated, the checkpoints that neither its average nor a resume needs
are removed (evaluate.sh --remove-unneeded-checkpoints; --keep-checkpoints keeps them).

--launcher slurm submits each run as a job of a SLURM cluster instead (recipes/slurm.py): the
same runs, folders, logs, table and plot.
"""

import argparse
import difflib
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

from . import DIRECTIONS, STEP_PREFIX, RecipeError, check_not_half_prepared, prepared_direction, run_main
from .collect import main as collect
from .collect import seeds_summary, still_learning, updates_cell
from .convergence import RULES
from .evaluate import outcome
from .identity import result_identity, software_versions, version_changes
from .train import (BENCHMARKS, PRECISIONS, batch_text, cpu_not_chosen, effective_batch, layout, rendezvous_flags,
                    run_command, start_run, visible_gpus)

DEFAULT_CONFIGS = ("transformer_l2", "transformer_l1", "transformer_bwn", "transformer_none", "lstm_nonorm",
                   "lstm_bwn")
EVALUATION = {"wmt14": ["--average", "5", "--beam", "4", "--lenpen", "0.6"],
              "iwslt14": ["--average", "5", "--beam", "5", "--lenpen", "1.0"]}
LOG_TAIL = 30  # lines of a failed step's log shown on the screen


def parse_args(argv):
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="compare.sh", description=__doc__.splitlines()[0], epilog=RULES)
    parser.add_argument("benchmark", choices=tuple(BENCHMARKS))
    parser.add_argument("prepared", help="made by scripts/prepare_{benchmark}_de_en.sh")
    parser.add_argument("out", help="one folder per configuration and seed, and the results")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per configuration")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--parallel", type=int, default=1, metavar="P",
                        help="runs side by side, each on 1/P of the CPU cores or GPUs (default 1)")
    parser.add_argument("--direction", choices=tuple(DIRECTIONS),
                        help="the translation direction; default: the one PREPARED was made for")
    parser.add_argument("--precision", action="append", default=[], metavar="[CONFIG=]P",
                        help="train CONFIG in P (fp16, amp, bf16, fp32) instead of its own precision (fp16 with a "
                             "layer norm, amp without); P alone: every configuration; repeatable. The runs of the "
                             "other configurations keep theirs, and stay valid")
    parser.add_argument("--retrain", action="store_true",
                        help="move aside (kept, renamed RUN.replaced-DATE) and train again the runs begun as "
                             "another experiment")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep every checkpoint of an evaluated run (default: only those its average "
                             "and a resume need)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: on this machine (default); slurm: each run a job of a SLURM cluster")
    add_slurm_options(parser)
    args = parser.parse_args(argv)
    args.extra = extra
    check_slurm_options(parser, args)
    unknown = [c for c in args.configs if c not in BENCHMARKS[args.benchmark][0]]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)} for {args.benchmark}; known: "
                     f"{', '.join(BENCHMARKS[args.benchmark][0])}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: needs at least 1")
    args.precisions = precision_overrides(parser, args)
    if args.parallel < 1:
        parser.error(f"--parallel {args.parallel}: needs at least 1")
    return args


def precision_overrides(parser, args) -> Dict[str, str]:
    """{config: precision} of the --precision options (P alone: every configuration of --configs;
    a CONFIG=P after it wins for that CONFIG). PRECISION in the environment is refused: it would
    change the precision of every configuration, and with it every recorded run."""
    if os.environ.get("PRECISION"):
        parser.error(f"PRECISION={os.environ['PRECISION']}: compare.sh takes --precision [CONFIG=]P, naming the "
                     "configurations it applies to (PRECISION is train_*.sh's, for one run)")
    overrides = {}
    for option in args.precision:
        config, _, precision = option.rpartition("=")
        if precision not in PRECISIONS:
            parser.error(f"--precision {option}: {precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
        if config and config not in args.configs:
            parser.error(f"--precision {option}: {config} is not among the configurations run "
                         f"({', '.join(args.configs)})")
        overrides.update({name: precision for name in ([config] if config else args.configs)})
    return overrides


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


def world_size_flags(args):
    """--distributed-world-size of a run over several nodes of a SLURM cluster (none otherwise:
    a run on one machine counts its GPUs itself)."""
    if args.launcher == "slurm" and args.nodes > 1:
        return ["--distributed-world-size", str(args.nodes * args.gpus_per_node)]
    return []


@dataclass
class Run:
    number: int
    config: str
    seed: int
    save_dir: Path

    @property
    def log(self) -> Path:
        return self.save_dir / "compare.log"

    def has_work(self) -> bool:
        """Whether the run holds something a new command would count or resume."""
        return (self.save_dir / "results.json").is_file() or any(self.save_dir.glob("checkpoint*.pt"))

    def extra(self, args) -> List[str]:
        """The run's fairseq-train arguments after the recipe's: the user's, the world size of a
        run over several nodes, its seed."""
        return [*args.extra, *world_size_flags(args), "--seed", str(self.seed)]

    def command(self, args, gpus: int, where=(), build=run_command) -> List[str]:
        """The run's fairseq-train command on `gpus` GPUs with the ranks meeting `where`, in its
        precision (--precision's, else its configuration's); build=start_run records it."""
        return build(self.config, args.prepared, self.save_dir, [*self.extra(args), *where], gpus, args.benchmark,
                     getattr(args, "precisions", {}).get(self.config))


def arguments_difference(recorded: List[str], now: List[str]) -> str:
    """'--max-update 250 -> --max-update 750; ...': where two lists of training arguments differ,
    a changed value shown with its flag."""
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=recorded, b=now, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        flag = [recorded[i1 - 1]] if i1 > 0 and recorded[i1 - 1].startswith("--") and tag == "replace" else []
        was, becomes = " ".join(flag + recorded[i1:i2]), " ".join(flag + now[j1:j2])
        changes.append(f"{was or '(nothing)'} -> {becomes or '(nothing)'}")
    return "; ".join(changes)


def identity_difference(recorded: dict, now: dict) -> str:
    """Where two result identities (identity.result_identity) differ, in words ('' if nowhere)."""
    changes = []
    if recorded["arguments"] != now["arguments"]:
        changes.append(arguments_difference(recorded["arguments"], now["arguments"]))
    if recorded["data"] != now["data"]:
        changes.append(f"the prepared data (fingerprint {recorded['data']} -> {now['data']}: prepare.json's settings "
                       "or the binarized files differ)")
    if recorded["batch_tokens"] != now["batch_tokens"]:
        changes.append(f"the batch of an update ({recorded['batch_tokens']} -> {now['batch_tokens']} tokens)")
    return "; ".join(changes)


def recorded_identity(record: dict) -> dict:
    """The result identity run.json recorded (computed from its command for a run.json older
    than the record of it)."""
    return record.get("identity") or result_identity(record["command"], record.get("effective_batch", {}).get("tokens"))


def read_record(run: Run):
    """The run's run.json, or None."""
    path = run.save_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else None


def runs_with_work(runs: List[Run], args, gpus: int):
    """[(run, its run.json or None, the fairseq-train command it would get now)] of the runs with
    work done (Run.has_work)."""
    return [(run, read_record(run), run.command(args, gpus)) for run in runs if run.has_work()]


def runs_of_another_identity(recorded, gpus: int) -> Dict[str, str]:
    """{run's folder name: how it differs} for each of `recorded` (runs_with_work) done under
    another result identity than it would get now (identity.py: arguments, data, batch; not
    where, nor how the batch is split over GPUs)."""
    found = {}
    for run, record, command in recorded:
        if record is None or "command" not in record:
            found[run.save_dir.name] = f"no fairseq-train command recorded ({run.save_dir / 'run.json'})"
            continue
        difference = identity_difference(recorded_identity(record),
                                         result_identity(command, effective_batch(command, gpus)["tokens"]))
        if difference:
            found[run.save_dir.name] = difference
    return found


def say_resumes_elsewhere(recorded, args, gpus: int) -> None:
    """A line for each unfinished run of `recorded` (runs_with_work) that resumes under other
    software versions or another GPU layout than its last start (the same experiment: said, not
    refused; run.json keeps both). On SLURM the versions are the nodes' (the job records them,
    the table says a change), not this login node's."""
    now = software_versions() if getattr(args, "launcher", "local") == "local" else None
    for run, record, command in recorded:
        if not record or not record.get("starts") or (run.save_dir / "results.json").is_file():
            continue
        last = record["starts"][-1]
        changes = [version_changes(last["versions"], now) if now else ""]
        batch = effective_batch(command, gpus)
        if layout(batch) != layout(last["effective_batch"]):
            changes.append(f"{layout(last['effective_batch'])} -> {layout(batch)}, the same {batch['tokens']} tokens "
                           "an update")
        if any(changes):
            print(f"[compare] warning: {run.save_dir.name} resumes under {'; '.join(c for c in changes if c)} "
                  "(recorded in its run.json and said in the table)", flush=True)


def move_aside(save_dir: Path) -> Path:
    """Rename a run's folder to FOLDER.replaced-YYYYmmdd-HHMMSS beside it (kept whole) and return
    the new path."""
    target = save_dir.with_name(f"{save_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    save_dir.rename(target)
    return target


def check_commands(runs: List[Run], args, gpus: int, busy: Dict[str, str] = None) -> None:
    """Refuse (or with --retrain, move aside) the runs trained as another experiment than now;
    `busy` names the runs still being trained elsewhere ({folder name: job id}), never moved.
    Runs that resume under other versions or GPUs are said."""
    recorded = runs_with_work(runs, args, gpus)
    differing = runs_of_another_identity(recorded, gpus)
    say_resumes_elsewhere([entry for entry in recorded if entry[0].save_dir.name not in differing], args, gpus)
    if not differing:
        return
    held = [f"{name} (job {job})" for name, job in (busy or {}).items() if name in differing]
    if args.retrain and held:
        raise RecipeError(f"--retrain would move aside runs whose jobs are queued or running: {', '.join(held)}; "
                          "scancel those jobs first (nothing was moved)")
    if args.retrain:
        for run in runs:
            if run.save_dir.name in differing:
                kept = move_aside(run.save_dir)
                print(f"[compare] --retrain: moved {run.save_dir} aside to {kept} (kept whole; "
                      f"{differing[run.save_dir.name]}); training it anew", flush=True)
        return
    lines = [f"  {name}: {difference}" for name, difference in differing.items()]
    shown = "\n".join(lines[:10]) + (f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else "")
    raise RecipeError(f"{len(differing)} run(s) in {args.out} were trained as another experiment than this command "
                      f"would train (recorded -> now):\n{shown}\nnothing was trained or moved: use another OUT for "
                      "the new command, or add --retrain to move these runs aside (kept, as FOLDER.replaced-DATE) "
                      "and train them again")


def check_direction(args) -> None:
    prepared = prepared_direction(args.prepared)
    if args.direction and args.direction != prepared:
        raise RecipeError(f"--direction {args.direction}: {args.prepared} was prepared for {prepared}; prepare "
                          f"another directory with scripts/prepare_{args.benchmark}_de_en.sh --direction "
                          f"{args.direction}, or leave --direction out")


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


def log_tail(log: Path, lines: int = LOG_TAIL) -> str:
    """The last `lines` lines of a log ('' for a log not written)."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(run: Run, command: List[str], environment: Dict[str, str], log: Path = None) -> None:
    """`command` with its output appended to `log` (default: the run's); a failure raises
    RecipeError naming the step that failed (the last one_run.announce line of the log) and
    showing the log's end."""
    log = log or run.log
    with log.open("a", encoding="utf-8") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **environment})
    if result.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        steps = [line[len(STEP_PREFIX):].split(":")[0] for line in lines if line.startswith(STEP_PREFIX)]
        raise RecipeError(f"{steps[-1] if steps else 'the run'} {run.save_dir.name} exited with "
                          f"{result.returncode}; the last lines of {log}:\n{log_tail(log)}\n"
                          "rerun the same compare.sh command to resume from there")


def train_then_evaluate(run: Run, args, gpus: int, environment: Dict[str, str], where=(), log: Path = None):
    """fairseq-train, then the evaluation, in one process (one_run.py) on `gpus` GPUs with the
    ranks meeting `where` (train.rendezvous_flags), the output in `log` (default: the run's,
    whose process also records the command in run.json: the other nodes of a run do not);
    returns the training command."""
    train = run.command(args, gpus, where, start_run if log in (None, run.log) else run_command)
    cleaning = [] if args.keep_checkpoints else ["--remove-unneeded-checkpoints"]
    run_logged(run, [sys.executable, "-m", "fairseq_normmatters.recipes.one_run", str(run.save_dir),
                     str(args.prepared), *EVALUATION[args.benchmark], *cleaning, "--", *train], environment, log)
    return train


def train_and_evaluate(run: Run, args, share: Share, progress: Progress) -> None:
    """train_then_evaluate on `share` of the machine, its start and end said by `progress`."""
    started = time.monotonic()
    batch = effective_batch(run.command(args, share.gpus), share.gpus)
    progress.say(run, f"training, batch {batch_text(batch)}")
    train_then_evaluate(run, args, share.gpus, share.environment, rendezvous_flags(share.gpus))
    took = time.monotonic() - started
    progress.finished(took)
    results = json.loads((run.save_dir / "results.json").read_text())
    progress.say(run, f"done in {minutes(took)}, {outcome(results)}")


def run_all(runs: List[Run], args, shares: List[Share], progress: Progress) -> None:
    """Each run in `runs` trained and evaluated, `args.parallel` at a time, each on a share; the
    first failure stops new runs from starting, lets the running ones end, and is raised."""
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
    check_direction(args)
    out = Path(args.out)
    runs = [Run(number, config, seed, out / f"{config}-seed{seed}") for number, (seed, config) in enumerate(
        ((seed, config) for seed in range(1, args.seeds + 1) for config in args.configs), 1)]
    if args.launcher == "slurm":
        from .slurm import compare_on_slurm
        return compare_on_slurm(runs, args)
    shares = machine_shares(args.parallel, visible_gpus(), len(os.sched_getaffinity(0)),
                            1 if args.benchmark == "iwslt14" else 0)  # IWSLT14: fairseq's one-GPU benchmark
    check_commands(runs, args, shares[0].gpus)
    if cpu_not_chosen(shares[0].gpus, args.extra):
        print("[compare] no GPU here and none expected (torch without CUDA): the runs train on the CPU (--cpu)")
    progress = Progress(len(runs), args.parallel)
    done = [run for run in runs if (run.save_dir / "results.json").is_file()]
    for run in done:
        progress.say(run, "done before")
    run_all([run for run in runs if run not in done], args, shares, progress)
    write_results(runs, out, progress)


def write_results(runs: List[Run], out: Path, progress: Progress) -> None:
    """OUT/results.md and OUT/curves.png from every run (collect_results.py), then the verdict."""
    results, curves = out / "results.md", out / "curves.png"
    collected = collect([*(str(run.save_dir) for run in runs), "--out", str(results), "--plot", str(curves),
                         "--quiet"])
    print(f"[compare] done in {minutes(time.monotonic() - progress.started)}: table {results}, curves {curves}",
          flush=True)
    print(verdict_line(collected), flush=True)


def verdict_line(runs) -> str:
    """One line: whether the table compares runs on their plateau (and at how many updates), or
    names those still learning, and the runs that diverged."""
    learning = still_learning(runs)
    diverged = [f"{run['name']} at update {run['diverged']['update']}" for run in runs if run.get("diverged")]
    diverged_text = (f"; {len(diverged)} of {len(runs)} runs diverged ({', '.join(diverged)}): they have no scores and "
                     "the means leave them out") if diverged else ""
    if len(diverged) == len(runs):
        return f"[compare] all {len(runs)} runs diverged ({', '.join(diverged)}): there are no scores to compare"
    at = f"at {updates_cell(runs)} updates"
    seeds = seeds_summary(runs)
    seeds_text = f". Over the seeds (Welch's t-test of BLEU): {seeds}" if seeds else ""
    if not learning:
        scored = "every run that did not diverge" if diverged else "every run"
        return (f"[compare] {scored} was on its plateau (validation NLL down at most 1% of perplexity over its last "
                f"fifth): the differences compare the models {at}{diverged_text}{seeds_text}")
    return (f"[compare] {len(learning)} of {len(runs)} runs were still learning ({', '.join(learning)} of NLL over "
            f"the last fifth): the rows with them compare early training {at}, not models on their plateau; train "
            f"longer (--max-update after --) in a new OUT, or with --retrain{diverged_text}{seeds_text}")


if __name__ == "__main__":
    run_main(main, "compare.sh")
