"""One run in one Python process: fairseq-train, then (for compare.sh) evaluate.sh's evaluation.

    python -m fairseq_normmatters.recipes.run.one_run SAVE_DIR PREPARED [evaluate.sh options]
                                                  -- FAIRSEQ-TRAIN COMMAND...
    python -m fairseq_normmatters.recipes.run.one_run -- FAIRSEQ-TRAIN COMMAND...   (train_*.sh: training only)

The same two steps as train_{benchmark}.sh and evaluate.sh, each announced in the output by a
line "== training: COMMAND" or "== evaluation: ..." (compare.sh names the failing step from the
last such line), with Python, torch and fairseq started once per run instead of twice. The
process holds the run folder's lock (lock.py: handed on by whatever started it, else taken
here) as long as it lives: one writer per run folder. In a run over several nodes of a SLURM job
only the first task holds it and evaluates. A training that diverges is not evaluated: its
results.json says where it diverged (evaluate.write_divergence), and the tables count it so.
Divergence is read from what fairseq says, its FloatingPointError's text, in whatever process
layout it was raised (divergence_reason). A training asked to stop by SIGTERM, SIGUSR2 or SIGINT
saves its state at the end of the update it is in and exits with status 75 (interruption.py), in
every process layout too.

A CPU run over several ranks (`--cpu --distributed-world-size N`) has its N rank processes
started here, as fairseq starts one a GPU (torch.multiprocessing.spawn), each with gloo and
--distributed-no-spawn: fairseq's own spawn counts GPUs only, and on a CPU it trains one
process however many ranks are asked.
"""

import logging
import os
import re
import sys
import traceback
from typing import Optional

from ... import install_fairseq_plugin
from ..common import LOG_FORMAT, PROGRAM_VARIABLE, STEP_PREFIX, RecipeError, run_main
from .interruption import INTERRUPTED, StopRequest, interrupted


def set_up_as_fairseq_train() -> None:
    """What the fairseq-train script does before it imports fairseq: INFO logging on stdout in
    fairseq's format (fairseq's modules log at import); then the plugin, installed (--user-dir
    would skip this package: it is imported already)."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(LOG_FORMAT)
    logging.basicConfig(level=logging.INFO, handlers=[console])
    install_fairseq_plugin()


# At import, not in main(): fairseq-train on several GPUs spawns its ranks as new processes that
# import this module again (as __mp_main__); the stop signals only where this module runs a training.
set_up_as_fairseq_train()
if __name__ in ("__main__", "__mp_main__"):
    from .interruption import install
    install()


def announce(step: str, command) -> None:
    print(f"{STEP_PREFIX}{step}: {' '.join(map(str, command))}", flush=True)


def train(command) -> None:
    """fairseq-train's own main with `command` (fairseq-train and its arguments) as sys.argv, in
    this process or, for a CPU run over several ranks, in one process a rank (cpu_ranks)."""
    ranks = cpu_ranks(command)
    if ranks > 1:
        import torch.multiprocessing
        from .command import free_port
        init = ["--distributed-init-method", f"tcp://127.0.0.1:{free_port()}"]
        torch.multiprocessing.spawn(train_rank, args=(command + init, ranks), nprocs=ranks, join=True)
        return
    from fairseq_cli import train as fairseq_train
    sys.argv = list(command)
    try:
        fairseq_train.cli_main()
    finally:
        StopRequest.in_training_loop = False


def cpu_ranks(command) -> int:
    """The rank processes to start for `command`: its --distributed-world-size for a CPU run
    (--cpu) that does not start its ranks itself (--distributed-no-spawn), else 1."""
    from .batch import last_value, whole
    if "--cpu" not in command or "--distributed-no-spawn" in command:
        return 1
    return whole(last_value(command, "--distributed-world-size", 1)) or 1


def train_rank(rank: int, command, ranks: int) -> None:
    """Rank `rank` of a CPU run of `ranks` processes: fairseq-train with gloo, this rank, and
    its share of the run's threads (legacy_ddp unless the command names a --ddp-backend)."""
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads() // ranks))
    ddp = [] if "--ddp-backend" in command else ["--ddp-backend", "legacy_ddp"]
    train([*command, "--distributed-no-spawn", "--distributed-rank", str(rank), "--distributed-backend", "gloo",
           "--device-id", "0", *ddp])


#: fairseq's FloatingPointError in a traceback's text: in this process, or a spawned worker's
#: (torch's ProcessRaisedException carries the worker's traceback as text, with no __cause__)
FLOATING_POINT_ERROR = re.compile(r"^(?:[\w.]+\.)?FloatingPointError: (.*?)(?=\n\n|\Z)", re.M | re.S)
NON_FINITE_RANK = re.compile(r"rank +(\d+) = (?:nan|-?inf)\b")


def divergence_reason(error: BaseException) -> Optional[str]:
    """Why the training diverged, as fairseq said it, or None if `error` is no divergence.
    fairseq raises FloatingPointError when the gradients turn NaN or inf ("gradients are
    Nan/Inf" on one process) or fp16's loss scale reaches its minimum; on several workers NaN
    gradient norms fail its consistency check first ("gradients are inconsistent between
    workers" with a norm of nan or inf on some rank), which with finite norms is a real fault,
    not a divergence. Under torch 2.13 fairseq's NanDetector can fail in turn and hide the error
    as the context of its own: the whole chain's text is searched, the last one wins."""
    found = FLOATING_POINT_ERROR.findall("".join(traceback.format_exception(error)))
    if not found:
        return None
    message = found[-1].strip()
    if "gradients are inconsistent between workers" not in message:
        return message.splitlines()[0]
    ranks = NON_FINITE_RANK.findall(message)
    return f"gradients are Nan/Inf (rank {', '.join(ranks)} of the workers)" if ranks else None


def first_task() -> bool:
    """Whether this process is the first task of its SLURM job, or not in one: the one that
    evaluates a run trained over several nodes (a task a node)."""
    return os.environ.get("SLURM_PROCID", "0") == "0"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--")
    evaluation, command = argv[:split], argv[split + 1:]
    if first_task():
        from . import lock as run_lock
        from .batch import last_value
        lock = run_lock.claim(last_value(command, "--save-dir", "checkpoints"))  # noqa: F841 (held while we live)
    announce("training", command)
    try:
        train(command)
    except Exception as error:
        if interrupted(error):  # a rank process stopped by a signal, its state saved
            sys.exit(INTERRUPTED)
        reason = divergence_reason(error)
        if reason is None:
            raise
        if not evaluation:
            raise RecipeError(f"the training diverged: {reason}") from None
        if first_task():
            from .evaluate import outcome, write_divergence
            print(f"[one_run] {outcome(write_divergence(evaluation[0], evaluation[1], reason))}", flush=True)
        return
    if not first_task() or not evaluation:
        return
    announce("evaluation", ["evaluate.sh", *evaluation])
    from .evaluate import evaluate_run, parse_args
    evaluate_run(parse_args(evaluation))


if __name__ == "__main__":
    run_main(main, os.environ.get(PROGRAM_VARIABLE, "compare.sh"))
