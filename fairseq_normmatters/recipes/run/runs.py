"""A run of the comparison wherever it runs: its folder and fairseq-train command, the check
of what it was begun as against what it would get now (identity.py: refused, or with --retrain
moved aside), the lines that say its progress, and its training and evaluation in one process
(one_run.py) with the output in its log. Both launchers (launch/local.py, launch/slurm/) run runs through
this module; it knows neither."""

import difflib
import os
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

from . import lock as run_lock
from ..common import STEP_PREFIX, RecipeError, RunInterrupted
from .identity import result_identity, software_versions, version_changes
from .folder import RunFolder
from .interruption import INTERRUPTED
from .batch import effective_batch, layout
from .command import run_command, start_run

EVALUATION = {"wmt14": ["--average", "5", "--beam", "4", "--lenpen", "0.6"],
              "iwslt14": ["--average", "5", "--beam", "5", "--lenpen", "1.0"]}
LOG_TAIL = 30  # lines of a failed step's log shown on the screen


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
    def folder(self) -> RunFolder:
        return RunFolder(self.save_dir)

    @property
    def log(self) -> Path:
        return self.folder.compare_log()

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


def runs_with_work(runs: List[Run], args, gpus: int):
    """[(run, its run.json or None, the fairseq-train command it would get now)] of the runs with
    work done (RunFolder.has_work)."""
    return [(run, run.folder.record(), run.command(args, gpus)) for run in runs if run.folder.has_work()]


def runs_of_another_identity(recorded, gpus: int) -> Dict[str, str]:
    """{run's folder name: how it differs} for each of `recorded` (runs_with_work) done under
    another result identity than it would get now (identity.py: arguments, data, batch; not
    where, nor how the batch is split over GPUs)."""
    found = {}
    for run, record, command in recorded:
        if record is None or "command" not in record:
            found[run.save_dir.name] = f"no fairseq-train command recorded ({run.folder.record_path})"
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
        if not record or not record.get("starts") or run.folder.is_evaluated():
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
                kept = run.folder.move_aside()
                print(f"[compare] --retrain: moved {run.save_dir} aside to {kept} (kept whole; "
                      f"{differing[run.save_dir.name]}); training it anew", flush=True)
        return
    lines = [f"  {name}: {difference}" for name, difference in differing.items()]
    shown = "\n".join(lines[:10]) + (f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else "")
    raise RecipeError(f"{len(differing)} run(s) in {args.out} were trained as another experiment than this command "
                      f"would train (recorded -> now):\n{shown}\nnothing was trained or moved: use another OUT for "
                      "the new command, or add --retrain to move these runs aside (kept, as FOLDER.replaced-DATE) "
                      "and train them again")


@contextmanager
def holding_out(out: Path, wait: bool):
    """OUT's lock (OUT/compare.lock, flock) held: by one compare.sh at a time. wait=False
    refuses at once when another holds it, naming it."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = run_lock.take_lock(out / "compare.lock", wait)
    except run_lock.LockHeld as held:
        raise RecipeError(f"{out} is in use by another compare.sh ({held.holder}); wait for it to end, or use "
                          "another OUT") from None
    with lock:
        yield


def log_tail(log: Path, lines: int = LOG_TAIL) -> str:
    """The last `lines` lines of a log ('' for a log not written)."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(run: Run, command: List[str], environment: Dict[str, str], log: Path = None,
               started: Callable[[subprocess.Popen], None] = None, lock=None) -> None:
    """`command` with its output appended to `log` (default: the run's), its process given to
    `started` and handed the run folder's `lock` (run_lock.handed_on) where one is given; a
    failure raises RecipeError naming the step that failed (the last one_run.announce line of the
    log) and showing the log's end, a stop on a signal RunInterrupted."""
    log = log or run.log
    handed = run_lock.handed_on(lock) if lock else {}
    with log.open("a", encoding="utf-8") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, **environment, **handed},
                                   pass_fds=(lock.fileno(),) if lock else ())
        if started:
            started(process)
        returncode = process.wait()
    if returncode == INTERRUPTED:
        raise RunInterrupted(f"{run.save_dir.name} stopped on a signal, its state saved at the end of an update "
                             f"(log {log}); rerun the same compare.sh command to resume from there")
    if returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        steps = [line[len(STEP_PREFIX):].split(":")[0] for line in lines if line.startswith(STEP_PREFIX)]
        raise RecipeError(f"{steps[-1] if steps else 'the run'} {run.save_dir.name} exited with "
                          f"{returncode}; the last lines of {log}:\n{log_tail(log)}\n"
                          "rerun the same compare.sh command to resume from there")


def train_then_evaluate(run: Run, args, gpus: int, environment: Dict[str, str], where=(), log: Path = None,
                        started: Callable[[subprocess.Popen], None] = None):
    """fairseq-train, then the evaluation, in one process (one_run.py) on `gpus` GPUs with the
    ranks meeting `where` (train.rendezvous_flags), the output in `log` (default: the run's,
    whose process also takes the run folder's lock, records the command in run.json and hands
    the lock to the training process: the other nodes of a run do neither); returns the
    training command."""
    first = log in (None, run.log)
    with run_lock.holding(run.save_dir) if first else nullcontext() as lock:
        train = run.command(args, gpus, where, start_run if first else run_command)
        cleaning = [] if args.keep_checkpoints else ["--remove-unneeded-checkpoints"]
        run_logged(run, [sys.executable, "-m", "fairseq_normmatters.recipes.run.one_run", str(run.save_dir),
                         str(args.prepared), *EVALUATION[args.benchmark], *cleaning, "--", *train], environment, log,
                   started, lock)
    return train
