"""One run of compare.sh in one Python process: fairseq-train, then evaluate.sh's evaluation.

    python -m fairseq_normmatters.recipes.one_run SAVE_DIR PREPARED [evaluate.sh options]
                                                  -- FAIRSEQ-TRAIN COMMAND...

The same two steps as train_{benchmark}.sh and evaluate.sh, each announced in the output by a
line "== training: COMMAND" or "== evaluation: ..." (compare.sh names the failing step from the
last such line), with Python, torch and fairseq started once per run instead of twice. In a run
over several nodes of a SLURM job only the first task evaluates. A training that diverges
(fairseq's FloatingPointError) is not evaluated: its results.json says where it diverged
(evaluate.write_divergence), and the tables count it so.
"""

import logging
import os
import sys

from .. import install_fairseq_plugin
from . import LOG_FORMAT, STEP_PREFIX, run_main


def set_up_as_fairseq_train() -> None:
    """What the fairseq-train script does before it imports fairseq: INFO logging on stdout in
    fairseq's format (fairseq's modules log at import); then the plugin, installed (--user-dir
    would skip this package: it is imported already)."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(LOG_FORMAT)
    logging.basicConfig(level=logging.INFO, handlers=[console])
    install_fairseq_plugin()


# At import, not in main(): fairseq-train on several GPUs spawns its ranks as new processes that
# import this module again.
set_up_as_fairseq_train()


def announce(step: str, command) -> None:
    print(f"{STEP_PREFIX}{step}: {' '.join(map(str, command))}", flush=True)


def train(command) -> None:
    """fairseq-train's own main with `command` (fairseq-train and its arguments) as sys.argv."""
    from fairseq_cli import train as fairseq_train
    sys.argv = list(command)
    fairseq_train.cli_main()


def floating_point_error(error: BaseException):
    """The FloatingPointError that `error` is or arose from, else None. fairseq raises one when
    the gradients turn NaN or inf (or fp16's loss scale reaches its minimum), then reruns the
    step under its NanDetector, whose backward hooks can fail in turn under torch 2.13
    (StopIteration from a module returning a dict without tensors), hiding it as the context."""
    while error is not None and not isinstance(error, FloatingPointError):
        error = error.__cause__ or error.__context__
    return error


def first_task() -> bool:
    """Whether this process is the first task of its SLURM job, or not in one: the one that
    evaluates a run trained over several nodes (a task a node)."""
    return os.environ.get("SLURM_PROCID", "0") == "0"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--")
    evaluation, command = argv[:split], argv[split + 1:]
    announce("training", command)
    try:
        train(command)
    except Exception as error:
        divergence = floating_point_error(error)
        if divergence is None:
            raise
        if first_task():
            from .evaluate import outcome, write_divergence
            print(f"[one_run] {outcome(write_divergence(evaluation[0], evaluation[1], str(divergence)))}", flush=True)
        return
    if not first_task():
        return
    announce("evaluation", ["evaluate.sh", *evaluation])
    from .evaluate import main as evaluate
    evaluate(evaluation)


if __name__ == "__main__":
    run_main(main, "compare.sh")
